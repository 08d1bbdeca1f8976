"""The small, fixed functions the checks hand to a student's function (a velocity field, a critic, a policy).

They take the state ``obs`` first, as qgf_lite's networks do: ``velocity(obs, a, t)``, ``critic(obs, a)``,
``policy(obs, noise)``. Built with an ``obs_matrix`` they depend on the state, so a student's function that drops
``obs``, passes ``None`` or pairs it with the wrong rows gives a different answer or a clear error; built without
one they ignore ``obs`` (a toy with no state, where ``obs`` is None).

They are not answers to any exercise. The autograder rebuilds them inside its sandbox from their recipe
(``qgf_spec``: builder name and arrays), where ``qgf_lite`` itself is not importable: so this module imports
nothing but jax and numpy, and the sandbox loads this file by path.
"""

import jax.numpy as jnp


def _column(t):
    """t of shape (batch,) or () as something that broadcasts against (batch, dim)."""
    t = jnp.asarray(t, jnp.float32)
    return t[:, None] if t.ndim == 1 else t


def _state_term(call, obs, a, obs_matrix):
    """tanh(obs W), (batch, dim), after checking obs against the actions; 0 for a field without state."""
    if obs_matrix is None:
        return 0.0
    if obs is None:
        raise ValueError(
            f"{call}: obs is None, but these inputs have a state; pass the obs you were given on unchanged, {call}."
        )
    obs = jnp.asarray(obs, jnp.float32)
    want = (a.shape[0], obs_matrix.shape[0])
    if obs.shape != want:
        raise ValueError(
            f"{call}: obs has shape {tuple(obs.shape)}, expected {want} (one state per row of the "
            f"actions, whose shape is {tuple(a.shape)}); are two arguments swapped? The order is "
            f"{call}."
        )
    return jnp.tanh(obs @ obs_matrix)


def _actions(call, a, dim):
    a = jnp.asarray(a, jnp.float32)
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(
            f"{call}: the actions must have shape (batch, {dim}), got {tuple(a.shape)}; are two "
            f"arguments swapped? The order is {call}."
        )
    return a


def _optional(array):
    return None if array is None else jnp.asarray(array, jnp.float32)


def velocity_field(matrix, drift, wiggle, obs_matrix=None):
    """v(s, a, t) = tanh(a M) + (1 + 2t) drift + sin(3t + a) wiggle + 0.5 tanh(s W), a (batch, dim), t (batch,)
    or (); the last term only with ``obs_matrix`` W (obs_dim, dim)."""
    matrix, drift, wiggle = (jnp.asarray(x, jnp.float32) for x in (matrix, drift, wiggle))
    obs_matrix = _optional(obs_matrix)
    call = "velocity(obs, a, t)"

    def velocity(obs, a, t):
        a = _actions(call, a, matrix.shape[0])
        tc = _column(t)
        state = _state_term(call, obs, a, obs_matrix)
        return jnp.tanh(a @ matrix) + (1.0 + 2.0 * tc) * drift + jnp.sin(3.0 * tc + a) * wiggle + 0.5 * state

    velocity.qgf_spec = (
        "velocity_field",
        {"matrix": matrix, "drift": drift, "wiggle": wiggle, "obs_matrix": obs_matrix},
    )
    return velocity


def critic_field(center, direction, obs_matrix=None):
    """Q(s, a) = -||a - center - 0.3 tanh(s W)||^2 + 0.5 sin(2 a . direction) for a (batch, dim); returns (batch,).
    The state moves the peak (so its gradient depends on s) only with ``obs_matrix`` W (obs_dim, dim)."""
    center, direction = jnp.asarray(center, jnp.float32), jnp.asarray(direction, jnp.float32)
    obs_matrix = _optional(obs_matrix)
    call = "critic(obs, a)"

    def critic(obs, a):
        a = _actions(call, a, center.shape[0])
        peak = center + 0.3 * _state_term(call, obs, a, obs_matrix)
        return -jnp.sum(jnp.square(a - peak), axis=-1) + 0.5 * jnp.sin(2.0 * a @ direction)

    critic.qgf_spec = ("critic_field", {"center": center, "direction": direction, "obs_matrix": obs_matrix})
    return critic


def policy_field(matrix, shift, scale=1.0, obs_matrix=None):
    """mu(s, z) = scale * (1.6 tanh(z M) + shift + 0.5 tanh(s W)) for noise z (batch, dim); the state term only
    with ``obs_matrix`` W (obs_dim, dim)."""
    matrix, shift = jnp.asarray(matrix, jnp.float32), jnp.asarray(shift, jnp.float32)
    obs_matrix = _optional(obs_matrix)
    scale = float(scale)
    call = "policy(obs, noise)"

    def policy(obs, noise):
        noise = _actions(call, noise, matrix.shape[0])
        state = _state_term(call, obs, noise, obs_matrix)
        return scale * (1.6 * jnp.tanh(noise @ matrix) + shift + 0.5 * state)

    policy.qgf_spec = ("policy_field", {"matrix": matrix, "shift": shift, "scale": scale, "obs_matrix": obs_matrix})
    return policy


BUILDERS = {"velocity_field": velocity_field, "critic_field": critic_field, "policy_field": policy_field}


__all__ = [
    "BUILDERS",
    "critic_field",
    "policy_field",
    "velocity_field",
]
