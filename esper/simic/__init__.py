"""Simic: the RL side — gymnasium environment, observation features, rewards, RLlib module and PPO config."""
