"""Offline RL: recording episodes (record.py) into RLlib offline rows (dataset.py), behaviour cloning (bc.py), warm start."""
