print("devprobe: not built yet")
