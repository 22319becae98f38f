"""The training verbs: `optima pretrain`, `optima finetune`, `optima distill`."""
