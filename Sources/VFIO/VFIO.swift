// VFIO: see README.md for this module's job.
