"""Qt-free core: checkpoints, methods, the streaming merge engine, recipes."""
