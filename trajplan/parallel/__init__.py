"""Work in other processes: child processes that stop together, and Ray tasks.

procs        child processes started through `python -m trajplan.parallel.procs`: a
             command or a function call each; Ctrl-C or SIGTERM reaches every child
             once (`--seeds --jobs`, `eval --workers`)
ray_backend  the same calls as Ray tasks, on one machine or a cluster (`--ray`)
"""
