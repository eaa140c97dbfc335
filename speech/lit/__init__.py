"""LightningModules and DataModules; they receive built models and never build them from configs."""
