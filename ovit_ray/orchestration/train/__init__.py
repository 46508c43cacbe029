"""Ray Train jobs: one gradual run on W workers, the sweep-vs-independent strategies, model export."""
