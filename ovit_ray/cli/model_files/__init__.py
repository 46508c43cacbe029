"""Commands on pruned model files: export one from a run or sweep folder, evaluate an exported one."""
