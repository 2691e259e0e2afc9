"""The renderer (moderngl, headless EGL) and the gymnasium environments around it.

Imports no torch and no Ray. ``gen3d/MeshRender-v0`` is registered on import (and through the
``gymnasium.envs`` entry point).
"""

ENV_ID = "gen3d/MeshRender-v0"


def register_envs() -> None:
    import gymnasium as gym

    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="envs.mesh_env:make_env",
                     vector_entry_point="envs.mesh_env:MeshRenderVectorEnv",
                     disable_env_checker=False)


register_envs()
