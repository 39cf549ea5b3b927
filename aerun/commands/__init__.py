"""One module per command. Each has `validate(cfg)` (what the CLI refuses before a run
directory exists) and `run(cfg, job)` (the work, in `job.out_dir`); some also have
`prepare_overrides(overrides, multirun)`, applied before the config is composed."""
