"""PPO over Tamiyo's masked factored heads: the RLlib config and step (algo.py), the RLModule (module.py), the main job (train.py)."""
