"""physid's simulators, registered with gymnasium under versioned ids in the ``physid/`` namespace.

Each simulator registers itself in its own section below; ``gymnasium.make("physid/…")`` works
once ``physid.envs`` is imported.
"""

from __future__ import annotations

import gymnasium as gym


def _register(env_id: str, entry_point: str, **kwargs: object) -> None:
    """Register ``env_id`` unless it already is (re-imports and reloads stay harmless)."""
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, **kwargs)  # type: ignore[arg-type]


# --- three-body ---------------------------------------------------------------------------------
_register(
    "physid/ThreeBody-v0",
    entry_point="physid.envs.three_body:ThreeBodyEnv",
    max_episode_steps=200,
)

# --- acrobot ------------------------------------------------------------------------------------
_register(
    "physid/Acrobot-v0",
    entry_point="physid.envs.acrobot:AcrobotEnv",
    max_episode_steps=400,
)

# --- hopper -------------------------------------------------------------------------------------
_register(
    "physid/Hopper-v0",
    entry_point="physid.envs.hopper:HopperEnv",
    max_episode_steps=200,
)
