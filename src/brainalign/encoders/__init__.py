"""Encoders that turn text (and brain data) into token and pooled embeddings."""
