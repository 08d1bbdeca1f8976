"""gradient_agreement against the exact chain rule on a linear flow, where the Jacobian of a -> a_hat is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qgf_lite.gradient_agreement import gradient_agreement


def _quadratic_critic(target):
    return lambda obs, a: -jnp.sum((a - target) ** 2, axis=-1)


@pytest.mark.parametrize("c", [0.5, 1.5])
def test_linear_flow_gives_the_analytic_cosine_and_ratio(c):
    # v(a, t) = -c a  =>  a_hat = (1 - (1 - t) c) a, so g_jac = (1 - (1 - t) c) g_qgf exactly (clip off):
    # cosine = sign(1 - (1 - t) c), norm ratio = 1 / |1 - (1 - t) c|.
    steps = 5
    noise = jax.random.normal(jax.random.PRNGKey(0), (16, 2)) * 0.3
    out = gradient_agreement(
        lambda obs, a, t: -c * a,
        _quadratic_critic(jnp.array([0.4, -0.2])),
        None,
        noise,
        steps=steps,
        weight=0.0,
        clip=None,
    )
    t = np.arange(steps) / steps
    scale = 1.0 - (1.0 - t) * c
    np.testing.assert_allclose(np.asarray(out["t"]), t, atol=1e-7)
    np.testing.assert_allclose(np.asarray(out["cosine"]), np.sign(scale)[:, None] * np.ones((steps, 16)), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out["norm_ratio"]), (1 / np.abs(scale))[:, None] * np.ones((steps, 16)), rtol=1e-4
    )


def test_a_nonlinear_flow_disagrees_where_its_jacobian_rotates():
    # v(a, t) = R a - a with R a rotation: d a_hat / d a = I + (1 - t)(R - I) rotates the gradient, the more the
    # smaller t, and not at all at t = 1.
    theta = 1.0
    rot = jnp.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    noise = jax.random.normal(jax.random.PRNGKey(1), (32, 2)) * 0.3
    out = gradient_agreement(
        lambda obs, a, t: a @ rot.T - a, _quadratic_critic(jnp.array([0.5, 0.0])), None, noise, steps=10, clip=None
    )
    cos = np.asarray(out["mean_cosine"])
    assert cos[0] < cos[-1] <= 1.0 + 1e-6
    assert cos[-1] > 0.95 and cos[0] < 0.7


def test_clipped_estimates_are_reported_undefined_not_zero():
    # Far outside the clip box a_hat is clipped: its gradient through the clip is zero, so g_jac = 0.
    noise = jnp.full((4, 2), 5.0)
    out = gradient_agreement(
        lambda obs, a, t: jnp.ones_like(a), _quadratic_critic(jnp.zeros(2)), None, noise, steps=2, clip=(-1.0, 1.0)
    )
    assert np.isnan(np.asarray(out["cosine"])).all()


def test_the_benchmark_runs_on_the_shipped_checkpoint_and_refuses_a_mismatched_dataset(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    from qgf_lite.ogbench import cli, pretrained_checkpoint

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "gradient_agreement_bench", root / "benchmarks" / "gradient_agreement.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = tmp_path / "cube-single-play-v0.npz"
    assert (
        cli.main(
            [
                "generate",
                "cube-single",
                "--episodes",
                "1",
                "--workers",
                "1",
                "--episode-length",
                "40",
                "--out",
                str(data),
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "agreement.json"
    result = bench.main(
        [
            "--checkpoint",
            str(pretrained_checkpoint()),
            "--dataset",
            str(data),
            "--states",
            "32",
            "--weight",
            "0.03",
            "--out",
            str(out),
        ]
    )
    row = json.loads(out.read_text())["checkpoints"][0]
    assert result["checkpoints"][0] == row and row["states"] == 32 and len(row["mean_cosine"]) == 10
    assert all(-1.0 <= c <= 1.0 for c in row["mean_cosine"]) and all(r > 0 for r in row["median_norm_ratio"])
    # Near t = 1 the estimate is one small step away: the two gradients must nearly agree there.
    assert row["mean_cosine"][-1] > 0.8
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, observations=np.zeros((10, 3), np.float32))
    with pytest.raises(SystemExit, match="expects observations of size"):
        bench.main(["--checkpoint", str(pretrained_checkpoint()), "--dataset", str(wrong)])
