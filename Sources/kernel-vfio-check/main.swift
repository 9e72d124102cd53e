print("kernel-vfio-check: not built yet")
