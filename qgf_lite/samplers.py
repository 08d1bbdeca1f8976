"""One vocabulary for the test-time samplers (docs/algorithm.md §4-§5): their names, labels, compute and dispatch.

- ``SamplerSpec``: one sampler, a frozen (hashable) dataclass of its method and the settings that method reads,
  with ``.label`` (text for tables and plots), ``.cost`` (network evaluations per action), ``.to_dict()`` /
  ``from_dict`` (report rows) and ``.sample(...)`` (draws the noise it needs and runs the kernel).
- ``SAMPLERS``: the registry, method name -> ``SamplerMethod`` (runner, noise shape, compute count, label, the
  fields it reads). Everything above is derived from it, so adding a method is adding one entry.
- ``specs_from_names``: the one parser from user names to specs, used by ``qgf-lite eval --methods`` and the toy
  notebooks. A name is a method (``bc``, ``guided``, ``best_of_n``, ``guided_best_of_n``, ``gradient_step``) or a
  guidance mode as shorthand (``qgf``, ``jacobian``, ``noisy``, ``bptt`` = ``guided`` in that mode;
  ``qgf_best_of_n``, ``noisy_best_of_n``, ... = ``guided_best_of_n`` in that mode).
- ``sampler_cost``: the compute count by method name.

The kernels themselves (``guided_sample``, ``best_of_n``, ``gradient_step``) live in ``qgf_lite.guidance``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from qgf_lite.guidance import MODES, best_of_n, gradient_step, guided_sample
from qgf_lite.validation import require_positive_int

# How tables and plots name the guidance modes (docs/algorithm.md §5).
MODE_LABELS = {"qgf": "QGF", "jacobian": "QGF-Jacobian", "noisy": "noisy-gradient", "bptt": "BPTT"}

# The settings a method may read, besides `steps` (which every method reads).
OPTIONAL_FIELDS = ("mode", "weight", "n", "step_size", "ascent_steps")
_FIELD_MEANING = {
    "mode": "guidance mode",
    "weight": "guidance weight",
    "n": "number of proposals",
    "step_size": "ascent step size",
    "ascent_steps": "number of ascent steps",
}


@dataclasses.dataclass(frozen=True)
class SamplerMethod:
    """One entry of ``SAMPLERS``: everything the package needs to know about a test-time method.

    run: (spec, velocity, critic, obs, noise, weight, clip) -> actions (batch, action_dim); ``weight`` is the
      weight of the SamplerSpec or a traced override (see ``SamplerSpec.sample``).
    noise_shape: (spec, action_dim) -> the shape of one particle's noise (``(action_dim,)``, or ``(n, action_dim)``
      for best-of-N).
    counts: (steps, n, ascent_steps, mode) -> (velocity forward passes, velocity backward passes, critic forward
      passes without gradient, critic gradients), per action; ``sampler_cost`` totals them.
    label: (spec, weight_text) -> text for tables and plots; ``weight_text`` is " w=0.1" or "" (the family name).
    uses: the SamplerSpec fields besides ``steps`` that the method reads; the others must keep their defaults.
    summary: one line for help texts.
    network: the network ``run`` receives as ``velocity``: "policy" (the BC flow, (obs, a, t) -> v) or a learner's
      name for a sampler that learner declares (``qgf_lite.learners``): "cfgrl" (CFG-RL's label-conditioned network,
      (obs, a, t, label) -> v), "fql" (FQL's one-step policy, (obs, noise) -> actions), ...; see
      ``qgf_lite.training.sampler_velocity_fn``.
    """

    run: Callable
    noise_shape: Callable
    counts: Callable
    label: Callable
    uses: frozenset = frozenset()
    summary: str = ""
    network: str = "policy"


def _one_particle(spec, action_dim):
    return (action_dim,)


def _n_particles(spec, action_dim):
    return (spec.n, action_dim)


def _guided_counts(steps, n, ascent_steps, mode):
    # bptt runs a fixed-length masked loop of `steps` velocity calls inside every outer step, and differentiates
    # back through it; the Jacobian mode's vector-Jacobian product is one backward pass through the velocity.
    velocity_forward = (1 + steps if mode == "bptt" else 1) * steps * n
    velocity_backward = {"jacobian": steps, "bptt": steps * steps}.get(mode, 0) * n
    return velocity_forward, velocity_backward, 0, steps * n


def _guided_best_of_n_counts(steps, n, ascent_steps, mode):
    vf, vb, _, grads = _guided_counts(steps, n, ascent_steps, mode)
    return vf, vb, n, grads  # plus one critic call to score each proposal


# Every test-time method on the BC flow; a learner's samplers (CFG-RL's, FQL's, ...) are declared by the learner
# and added below. Adding a method is one entry here or in its learner.
SAMPLERS = {
    "bc": SamplerMethod(
        run=lambda s, velocity, critic, obs, noise, w, clip: guided_sample(
            velocity, None, obs, noise, steps=s.steps, clip=clip
        ),
        noise_shape=_one_particle,
        counts=lambda steps, n, ascent_steps, mode: (steps, 0, 0, 0),
        label=lambda s, w: "BC",
        summary="behaviour cloning: plain Euler sampling of the flow (w = 0)",
    ),
    "guided": SamplerMethod(
        run=lambda s, velocity, critic, obs, noise, w, clip: guided_sample(
            velocity, critic, obs, noise, steps=s.steps, weight=w, mode=s.mode, clip=clip
        ),
        noise_shape=_one_particle,
        counts=_guided_counts,
        label=lambda s, w: f"{MODE_LABELS[s.mode]}{w}",
        uses=frozenset({"mode", "weight"}),
        summary="critic-guided Euler sampling (mode qgf, jacobian, noisy or bptt) at guidance weight w",
    ),
    "best_of_n": SamplerMethod(
        # A Python 0, not a traced weight, lets the proposals skip the critic gradients.
        run=lambda s, velocity, critic, obs, noise, w, clip: best_of_n(
            velocity, critic, obs, noise, steps=s.steps, weight=0.0, clip=clip
        ),
        noise_shape=_n_particles,
        counts=lambda steps, n, ascent_steps, mode: (steps * n, 0, n, 0),
        label=lambda s, w: f"best-of-{s.n}",
        uses=frozenset({"n"}),
        summary="n unguided samples, keep the one the critic scores highest",
    ),
    "guided_best_of_n": SamplerMethod(
        run=lambda s, velocity, critic, obs, noise, w, clip: best_of_n(
            velocity, critic, obs, noise, steps=s.steps, weight=w, mode=s.mode, clip=clip
        ),
        noise_shape=_n_particles,
        counts=_guided_best_of_n_counts,
        label=lambda s, w: f"{MODE_LABELS[s.mode]}{w} + best-of-{s.n}",
        uses=frozenset({"mode", "weight", "n"}),
        summary="n guided samples, keep the one the critic scores highest",
    ),
    "gradient_step": SamplerMethod(
        run=lambda s, velocity, critic, obs, noise, w, clip: gradient_step(
            velocity, critic, obs, noise, steps=s.steps, step_size=s.step_size, ascent_steps=s.ascent_steps, clip=clip
        ),
        noise_shape=_one_particle,
        counts=lambda steps, n, ascent_steps, mode: (steps, 0, 0, ascent_steps),
        label=lambda s, w: f"gradient-step a={s.step_size:g} x{s.ascent_steps}",
        uses=frozenset({"step_size", "ascent_steps"}),
        summary="a BC sample, then ascent_steps steps a <- clip(a + step_size * grad_a Q)",
    ),
}


def _add_learner_samplers() -> None:
    """The samplers each learner declares (``qgf_lite.learners.Learner.samplers``), run on its network."""
    from qgf_lite.learners import get_learner, learner_names

    for name in learner_names():
        for method, entry in get_learner(name).samplers.items():
            SAMPLERS[method] = SamplerMethod(**{"noise_shape": _one_particle, "network": name, **entry})


_add_learner_samplers()
SAMPLER_METHODS = tuple(SAMPLERS)

# Shorthands: a guidance mode names the guided method in that mode (the CLI's names since 0.1).
SHORTHANDS = {
    **{mode: ("guided", mode) for mode in MODES},
    **{f"{mode}_best_of_n": ("guided_best_of_n", mode) for mode in MODES},
}
SAMPLER_NAMES = SAMPLER_METHODS + tuple(SHORTHANDS)


def _names() -> tuple:
    """Every name ``specs_from_names`` accepts (read from the registry now, so a new entry is a new name)."""
    return tuple(SAMPLERS) + tuple(SHORTHANDS)


def _users_of(field: str) -> str:
    return ", ".join(m for m, entry in SAMPLERS.items() if field in entry.uses)


def _unknown_method_message(method) -> str:
    hint = ""
    if isinstance(method, str) and method in SHORTHANDS:
        real, mode = SHORTHANDS[method]
        hint = f" ({method!r} is a name for specs_from_names; as a spec it is SamplerSpec({real!r}, mode={mode!r}))"
    return f"Unknown sampler `method` {method!r}; choose one of {', '.join(SAMPLERS)}{hint}."


def _require_number(name: str, value, why: str) -> float:
    """A concrete, finite Python number >= 0 (a spec is hashed and written to JSON: no arrays, no tracers)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number >= 0, got {value!r} ({type(value).__name__}); {why}.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be finite and >= 0, got {value}.")
    return value


def _is_key(x) -> bool:
    """A jax PRNG key: a typed key, or a raw uint32 key of shape (2,) (noise is always floating point)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return False
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype == jnp.uint32 and np.shape(x) == (2,)


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One test-time sampler: a method from ``SAMPLERS`` and its settings.

    method: "bc", "guided", "best_of_n", "guided_best_of_n" or "gradient_step" (the keys of ``SAMPLERS``).
    mode: how guided methods take the critic's gradient: "qgf", "jacobian", "noisy" or "bptt".
    weight: guidance weight w >= 0 of guided methods.
    n: proposals of best-of-N methods.
    step_size, ascent_steps: gradient_step's ascent a <- clip(a + step_size * grad_a Q), ascent_steps times.
    steps: Euler steps K of the flow (every method).

    A setting the method does not read must keep its default, so a spec never says something it does not do
    (a weight on "bc", gradient_step's step size in the weight slot, n proposals on a single sample): such a spec
    is rejected with a ValueError that names the methods that do read it.
    """

    method: str
    mode: str = "qgf"
    weight: float = 0.0
    n: int = 1
    step_size: float = 0.01
    ascent_steps: int = 3
    steps: int = 10

    def __post_init__(self):
        if not isinstance(self.method, str) or self.method not in SAMPLERS:
            raise ValueError(_unknown_method_message(self.method))
        if self.mode not in MODES:
            raise ValueError(f"Unknown guidance `mode` {self.mode!r}; choose one of {', '.join(MODES)}.")
        normalised = {
            "weight": _require_number("weight", self.weight, "to sweep a traced weight, pass weight= to sample()"),
            "step_size": _require_number("step_size", self.step_size, "one step size for every particle"),
            "n": require_positive_int("n", self.n),
            "ascent_steps": require_positive_int("ascent_steps", self.ascent_steps, minimum=0),
            "steps": require_positive_int("steps", self.steps),
        }
        for name, value in normalised.items():  # plain Python numbers: hashable, comparable, JSON-ready
            object.__setattr__(self, name, value)
        uses = SAMPLERS[self.method].uses
        for field in dataclasses.fields(self):
            if field.name in OPTIONAL_FIELDS and field.name not in uses and getattr(self, field.name) != field.default:
                hint = ""
                if (self.method, field.name) == ("gradient_step", "weight"):
                    hint = " (its ascent step is `step_size`)"
                raise ValueError(
                    f"Method {self.method!r} takes no {_FIELD_MEANING[field.name]}{hint}, but "
                    f"`{field.name}`={getattr(self, field.name)!r}; `{field.name}` applies to "
                    f"{_users_of(field.name)} only. Leave it at its default ({field.default!r})."
                )

    # ------------------------------------------------------------------ derived from the registry
    @property
    def entry(self) -> SamplerMethod:
        return SAMPLERS[self.method]

    @property
    def network(self) -> str:
        """The network this sampler runs: "policy" (the BC flow) or a learner's name ("cfgrl", "fql", ...)."""
        return self.entry.network

    @property
    def takes_weight(self) -> bool:
        """True for methods with a guidance weight (the knob a weight sweep turns)."""
        return "weight" in self.entry.uses

    @property
    def label(self) -> str:
        """Human text for tables and plots, e.g. "BC", "QGF w=0.1", "QGF w=0.1 + best-of-4"."""
        return self.entry.label(self, f" w={self.weight:g}" if self.takes_weight else "")

    @property
    def family(self) -> str:
        """The label without the weight ("QGF", "QGF + best-of-4"): the line a weight sweep draws."""
        return self.entry.label(self, "")

    @property
    def cost(self) -> int:
        """Network evaluations per action (``sampler_cost``'s total)."""
        return self.cost_breakdown()["total"]

    def cost_breakdown(self) -> dict:
        """``sampler_cost`` for this spec: velocity/critic forward and backward passes, and their total."""
        return sampler_cost(self.method, steps=self.steps, n=self.n, ascent_steps=self.ascent_steps, mode=self.mode)

    def noise_shape(self, action_dim: int) -> tuple:
        """Shape of one particle's starting noise: (action_dim,), or (n, action_dim) for best-of-N."""
        return tuple(self.entry.noise_shape(self, action_dim))

    def draw_noise(self, key, batch: int, action_dim: int) -> jnp.ndarray:
        """Standard normal noise (batch, *noise_shape(action_dim)) from ``key``."""
        return jax.random.normal(key, (batch, *self.noise_shape(action_dim)))

    def with_weight(self, weight) -> SamplerSpec:
        return dataclasses.replace(self, weight=weight)

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        velocity,
        critic,
        obs,
        noise,
        *,
        weight=None,
        clip=(-1.0, 1.0),
        batch: int | None = None,
        action_dim: int | None = None,
    ) -> jnp.ndarray:
        """Actions (batch, action_dim) from this sampler.

        ``noise`` is the starting noise, shape (batch, *noise_shape(action_dim)), or a PRNG key from which it is
        drawn (``draw_noise``; then ``action_dim`` is needed, and ``batch`` when ``obs`` is None).
        ``weight`` overrides the weight set here and may be traced, so one jitted sampler serves a whole weight
        sweep; only methods that take a weight accept it.
        """
        if _is_key(noise):
            if action_dim is None:
                raise ValueError("`noise` is a PRNG key: pass `action_dim` (and `batch` when obs is None) to draw it.")
            if batch is None:
                if obs is None:
                    raise ValueError("`noise` is a PRNG key and obs is None: pass `batch`, the number of actions.")
                batch = int(np.shape(obs)[0])
            noise = self.draw_noise(
                noise, require_positive_int("batch", batch), require_positive_int("action_dim", action_dim)
            )
        elif batch is not None or action_dim is not None:
            raise ValueError("`batch` and `action_dim` are for drawing noise from a key; `noise` is already an array.")
        if weight is None:
            weight = self.weight
        elif not self.takes_weight:
            raise ValueError(f"{self.label} takes no guidance weight; only {_users_of('weight')} do.")
        shape = np.shape(noise)
        if len(shape) >= 1 and tuple(shape[1:]) != self.noise_shape(shape[-1]):
            raise ValueError(
                f"`noise` for {self.label} must have shape (batch, {', '.join(map(str, self.noise_shape(shape[-1])))})"
                f", got {tuple(shape)}."
            )
        return self.entry.run(self, velocity, critic, obs, noise, weight, clip)

    # ------------------------------------------------------------------ reports
    def to_dict(self) -> dict:
        """Every field, as JSON-ready Python values (fields the method does not read hold their defaults)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> SamplerSpec:
        """The SamplerSpec whose fields ``data`` holds; other keys are ignored, so a report row gives it back."""
        if "method" not in data:
            raise ValueError(f"A sampler spec needs a `method`; got keys {sorted(data)}.")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def sampler_cost(method: str, steps: int = 10, n: int = 1, ascent_steps: int = 3, mode: str = "qgf") -> dict:
    """Network evaluations one action costs, for compute-matched comparisons (docs/algorithm.md §5).

    Counts forward and backward passes of the velocity network, critic forward passes and critic backward passes;
    a critic gradient is a forward plus a backward pass. ``method`` is one of ``SAMPLER_METHODS``; ``mode`` matters
    for guided methods, ``n`` for best-of-N, ``ascent_steps`` for gradient_step. ``SamplerSpec.cost`` is its total.
    """
    if method not in SAMPLERS:
        raise ValueError(_unknown_method_message(method))
    if "mode" in SAMPLERS[method].uses and mode not in MODES:
        raise ValueError(f"Unknown guidance `mode` {mode!r}; choose one of {', '.join(MODES)}.")
    velocity_forward, velocity_backward, critic_calls, critic_grads = SAMPLERS[method].counts(
        steps, n, ascent_steps, mode
    )
    return {
        "velocity_forward": velocity_forward,
        "velocity_backward": velocity_backward,
        "critic_forward": critic_calls + critic_grads,
        "critic_backward": critic_grads,
        "total": velocity_forward + velocity_backward + critic_calls + 2 * critic_grads,
    }


# --------------------------------------------------------------------------- parsing user names
def resolve_name(name: str) -> tuple[str, str | None]:
    """(method, mode) for a user name: a method keeps the default mode (None), a shorthand brings its own."""
    if isinstance(name, str) and name in SAMPLERS:
        return name, None
    if isinstance(name, str) and name in SHORTHANDS:
        return SHORTHANDS[name]
    raise ValueError(f"Unknown method {name!r}; choose from {', '.join(_names())}.")


def spec_from_name(
    name: str, weight: float = 0.0, *, n: int = 4, step_size: float = 0.01, ascent_steps: int = 3, steps: int = 10
) -> SamplerSpec:
    """The SamplerSpec a user name stands for, each setting applied where the method reads it.

    ``weight`` goes to guided methods, ``n`` to best-of-N, ``step_size`` and ``ascent_steps`` to gradient_step;
    the rest is left at the defaults. See ``specs_from_names`` for the names.
    """
    method, mode = resolve_name(name)
    offered = {"mode": mode, "weight": weight, "n": n, "step_size": step_size, "ascent_steps": ascent_steps}
    uses = SAMPLERS[method].uses
    return SamplerSpec(method, steps=steps, **{k: v for k, v in offered.items() if k in uses and v is not None})


def specs_from_names(
    names: Iterable,
    weights: Iterable[float] = (),
    n: int = 4,
    step_size: float = 0.01,
    steps: int = 10,
    ascent_steps: int = 3,
) -> list[SamplerSpec]:
    """The specs a list of user names stands for, in order, without duplicates.

    A name is a method in ``SAMPLER_METHODS`` or a shorthand: a guidance mode ("qgf", "jacobian", "noisy",
    "bptt") for "guided" in that mode, "<mode>_best_of_n" for "guided_best_of_n" in that mode ("guided" and
    "guided_best_of_n" themselves use mode "qgf"). Methods with a guidance weight give one spec per weight > 0
    (w = 0 is "bc"); the others give one spec: best-of-N with ``n`` proposals, gradient_step with ``step_size`` and
    ``ascent_steps`` (never a weight). Every spec takes ``steps`` Euler steps. A ``SamplerSpec`` among the names is
    kept as it is.
    """
    if isinstance(names, str):
        raise TypeError(f"`names` must be a list of names, e.g. [{names!r}], not a string.")
    names = list(names)
    unknown = [m for m in names if not isinstance(m, SamplerSpec) and (not isinstance(m, str) or m not in _names())]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {', '.join(_names())}.")
    try:
        weights = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(f"Guidance weights must be numbers >= 0, got {weights!r}.") from None
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"Guidance weights must be finite and >= 0, got {weights}.")
    positive = [w for w in weights if w > 0]
    knobs = dict(
        n=require_positive_int("n", n),
        step_size=_require_number("step_size", step_size, "one step size"),
        ascent_steps=require_positive_int("ascent_steps", ascent_steps, minimum=0),
        steps=require_positive_int("steps", steps),
    )
    specs = []
    for name in names:
        if isinstance(name, SamplerSpec):
            specs.append(name)
        elif "weight" in SAMPLERS[resolve_name(name)[0]].uses:
            specs.extend(spec_from_name(name, w, **knobs) for w in positive)
        else:
            specs.append(spec_from_name(name, **knobs))
    if not specs:
        raise ValueError("No samplers to run: guided methods need at least one weight > 0.")
    return list(dict.fromkeys(specs))  # drop duplicates, keep order


def matched_best_of_n(budget: int, steps: int = 10) -> int:
    """The largest N whose best-of-N (unguided, ``steps`` Euler steps) costs at most ``budget`` network
    evaluations per action: N proposals of ``steps`` velocity evaluations each, plus one critic evaluation to score
    each (see :func:`sampler_cost`). Raises ValueError when not even one sample fits."""
    from qgf_lite.validation import require_positive_int

    budget = require_positive_int("budget", budget)
    steps = require_positive_int("steps", steps)
    n = 0
    while SamplerSpec("best_of_n", n=n + 1, steps=steps).cost <= budget:
        n += 1
    if n == 0:
        raise ValueError(
            f"`budget` {budget} is below the cost of a single sample with {steps} steps "
            f"({SamplerSpec('best_of_n', n=1, steps=steps).cost})."
        )
    return n


__all__ = [
    "MODE_LABELS",
    "matched_best_of_n",
    "SAMPLERS",
    "SAMPLER_METHODS",
    "SAMPLER_NAMES",
    "SHORTHANDS",
    "SamplerMethod",
    "SamplerSpec",
    "resolve_name",
    "sampler_cost",
    "spec_from_name",
    "specs_from_names",
]
