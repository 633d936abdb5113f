"""Lightning training shared by every neural method (see trainer.py)."""
