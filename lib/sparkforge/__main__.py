from sparkforge.cli import entrypoint

entrypoint()
