print("switchover: not built yet")
