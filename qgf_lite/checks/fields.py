"""The small, fixed functions the checks hand to a student's function (a velocity field, a critic, a policy).

They are not answers to any exercise. The autograder rebuilds them inside its sandbox from their recipe
(``qgf_spec``: builder name and arrays), where ``qgf_lite`` itself is not importable: so this module imports
nothing but jax and numpy, and the sandbox loads this file by path.
"""

import jax.numpy as jnp


def _column(t):
    """t of shape (batch,) or () as something that broadcasts against (batch, dim)."""
    t = jnp.asarray(t, jnp.float32)
    return t[:, None] if t.ndim == 1 else t


def velocity_field(matrix, drift, wiggle):
    """v(a, t) = tanh(a M) + (1 + 2t) drift + sin(3t + a) wiggle for a (batch, dim), t (batch,) or ()."""
    matrix, drift, wiggle = (jnp.asarray(x, jnp.float32) for x in (matrix, drift, wiggle))

    def velocity(a, t):
        a = jnp.asarray(a, jnp.float32)
        tc = _column(t)
        return jnp.tanh(a @ matrix) + (1.0 + 2.0 * tc) * drift + jnp.sin(3.0 * tc + a) * wiggle

    velocity.qgf_spec = ("velocity_field", {"matrix": matrix, "drift": drift, "wiggle": wiggle})
    return velocity


def critic_field(center, direction):
    """Q(a) = -||a - center||^2 + 0.5 sin(2 a . direction) for a (batch, dim); returns (batch,)."""
    center, direction = jnp.asarray(center, jnp.float32), jnp.asarray(direction, jnp.float32)

    def critic(a):
        a = jnp.asarray(a, jnp.float32)
        return -jnp.sum(jnp.square(a - center), axis=-1) + 0.5 * jnp.sin(2.0 * a @ direction)

    critic.qgf_spec = ("critic_field", {"center": center, "direction": direction})
    return critic


def policy_field(matrix, shift, scale=1.0):
    """mu(z) = scale * (1.6 tanh(z M) + shift) for noise z (batch, dim)."""
    matrix, shift = jnp.asarray(matrix, jnp.float32), jnp.asarray(shift, jnp.float32)
    scale = float(scale)

    def policy(noise):
        return scale * (1.6 * jnp.tanh(jnp.asarray(noise, jnp.float32) @ matrix) + shift)

    policy.qgf_spec = ("policy_field", {"matrix": matrix, "shift": shift, "scale": scale})
    return policy


BUILDERS = {"velocity_field": velocity_field, "critic_field": critic_field, "policy_field": policy_field}
