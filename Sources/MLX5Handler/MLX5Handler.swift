// MLX5Handler: see README.md for this module's job.
