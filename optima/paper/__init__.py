"""Paper outputs from finished runs: `optima collect` (runs.csv), `optima tables`, `optima figures`.

Everything here reads only ``results/eval/runs.csv`` and the runs' ``train_log.csv`` files, so
restyling a table or a figure never retrains anything. Heavy imports (pandas, scipy, matplotlib)
happen inside the verbs' ``run`` functions.
"""
