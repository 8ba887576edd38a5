"""The method registry: what `run` knows of each method, in one record per name.

`register(name, ...)` decorates a Method subclass (or a function building one) and files a
`MethodRecord`: its builder, its options (`Option`, each a flag of `run`), the k `run`
trains by default, the kind of data it models, what its k counts, defaults that depend on
the profile or the data, its training recipe (`recipes.TrainingRecipe`) and its scorer
(`scoring.Scorer`), and the plug-in it came from. Nothing is set on the registered class.

A family names the recipe and scorer of its methods once (`family_defaults`), so a
plug-in subclass of a family trains and scores as the family does; a method class written
to the earlier API, whose own `make_optimizer`, `test_nll`, ... define its recipe and
scoring, keeps them (`recipes.LegacyRecipe`, `scoring.LegacyScorer`).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

from genvar_bench.recipes import LegacyRecipe, TrainingRecipe
from genvar_bench.scoring import ImportanceScorer, LegacyScorer, Scorer

# The builder parameters every method takes; options may not reuse them.
STANDARD_PARAMETERS = ("self", "data_dim", "layers", "num_samples", "backend")


@dataclass(frozen=True)
class Option:
    """One option of a method, declared once where the method is registered: `run` makes
    the flag `--<name>` from it (a comma list runs every value), checks each value against
    `choices` or [low, high] before any training, and passes it to the method's
    constructor as the keyword `name`. A `default` of None is resolved per profile and
    data by the method's `option_defaults`."""

    name: str
    kind: type
    default: object
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """`value` as the option's kind; ValueError saying what it takes otherwise."""
        if self.kind is bool and isinstance(value, str):  # bool("false") would be True
            words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            if value.strip().lower() not in words:
                raise ValueError(f"{self.flag} takes true or false, got {value!r}")
            value = words[value.strip().lower()]
        try:
            value = self.kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.flag} takes {self.kind.__name__} values, got {value!r}") from None
        if self.kind is float and not math.isfinite(value):
            raise ValueError(f"{self.flag} takes finite numbers, got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.flag} must be among {', '.join(map(str, self.choices))}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"{self.flag} takes values from {self.low} to {self.high}, got {value!r}")
        return value

    def parse(self, text: str) -> list:
        """A comma-separated list of values, each checked; ValueError otherwise."""
        values = [self.check(item.strip()) for item in str(text).split(",") if item.strip()]
        if not values:
            raise ValueError(f"{self.flag} needs at least one value, got {text!r}")
        return values


@dataclass
class MethodRecord:
    """A registered method (see the module docstring)."""

    name: str
    builder: Callable[..., Any]
    options: tuple[Option, ...] = ()
    default_num_samples: tuple[int, ...] | None = None
    data_kind: str = "binary"
    k_meaning: str = "importance samples"
    option_defaults: Callable[..., dict[str, object]] | None = None
    # Given to `register`; None: the family's (looked up when asked), else the default.
    given_recipe: TrainingRecipe | None = None
    given_scorer: Scorer | None = None
    plugin: str | None = None  # the plug-in file or module it was loaded from

    @property
    def recipe(self) -> TrainingRecipe:
        """How it trains: the recipe given to `register`, else its family's, else the
        default; a class of the earlier API with its own hooks wraps them."""
        family = _family(self.builder, 0)
        if self.given_recipe is not None:
            return self.given_recipe
        if _defines(self.builder, _LEGACY_RECIPE):
            return LegacyRecipe(family)
        return family or TrainingRecipe()

    @property
    def scorer(self) -> Scorer:
        """How it is scored, found as `recipe` is."""
        family = _family(self.builder, 1)
        if self.given_scorer is not None:
            return self.given_scorer
        if _defines(self.builder, _LEGACY_SCORING):
            return LegacyScorer(family, getattr(self.builder, "scoring_settings", None))
        return family or ImportanceScorer()

    def __call__(self, *args, **kwargs):
        """Builds the method (the builder's own signature)."""
        return self.builder(*args, **kwargs)

    @property
    def scoring_settings(self) -> dict[str, Any]:
        """The settings of its scoring protocol that a run's spec records (AIS's)."""
        return dict(self.scorer.settings)


METHODS: dict[str, MethodRecord] = {}
# {family base class: (recipe, scorer)}, looked up along a registered class's MRO.
_FAMILIES: dict[type, tuple[TrainingRecipe | None, Scorer | None]] = {}
# The earlier API's recipe and scoring hooks, defined on a method class itself.
_LEGACY_RECIPE = ("prepare_training", "make_optimizer", "epoch_settings", "training_batch_size")
_LEGACY_SCORING = ("prepare_scoring", "prepare_check", "test_nll", "importance_bound_samples")


def family_defaults(base: type, *, recipe: TrainingRecipe | None = None,
                    scorer: Scorer | None = None) -> None:
    """The recipe and scorer of every method registered from a subclass of `base`."""
    _FAMILIES[base] = (recipe, scorer)


def _family(builder, index: int):
    for cls in getattr(builder, "__mro__", ()):
        if cls in _FAMILIES and _FAMILIES[cls][index] is not None:
            return _FAMILIES[cls][index]
    return None


def _defines(builder, hooks: tuple[str, ...]) -> bool:
    """Whether a class of the earlier API defines one of `hooks` itself (outside the
    families, which have a recipe and a scorer)."""
    return any(hook in vars(cls) for cls in getattr(builder, "__mro__", ())
               if cls not in _FAMILIES and cls.__module__.split(".")[0] not in ("genvar_bench", "torch")
               for hook in hooks)


def register(name: str, *, options: tuple[Option, ...] | None = None,
             default_num_samples: tuple[int, ...] | None = None, data_kind: str | None = None,
             k_meaning: str | None = None,
             option_defaults: Callable[..., dict[str, object]] | None = None,
             recipe: TrainingRecipe | None = None, scorer: Scorer | None = None):
    """Decorator of a Method subclass, or of a function building one: files it in the
    registry under `name`, with what `run` needs to know of it:
    - `options`: its Option declarations (each a keyword parameter of the builder);
    - `default_num_samples`: the k `run` trains when none are given (None: the profile's);
    - `data_kind`: "binary" (default) or "continuous";
    - `k_meaning`: what k counts for it ("importance samples" by default; "Gibbs sweeps
      per update", "diffusion steps per example");
    - `option_defaults(profile, data_dim)`: {option: default} for options whose default
      depends on the profile or the data;
    - `recipe`, `scorer`: how it trains and is scored (default: its family's, else Adam on
      the profile's schedule and importance sampling).
    A class attribute of the same name (the earlier API) counts where a keyword is not given."""
    def decorate(builder):
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        declared: dict[str, Any] = {"options": options, "default_num_samples": default_num_samples,
                    "data_kind": data_kind, "k_meaning": k_meaning,
                    "option_defaults": option_defaults}
        inherited = _registered_base(builder)
        for attribute, value in declared.items():
            if value is None and isinstance(builder, type):  # the earlier API's class attribute
                declared[attribute] = getattr(builder, attribute, None)
            if declared[attribute] is None and inherited is not None:  # a registered base's
                declared[attribute] = getattr(inherited, attribute)
        record = MethodRecord(
            name=name, builder=builder, options=tuple(declared["options"] or ()),
            default_num_samples=declared["default_num_samples"],
            data_kind=declared["data_kind"] or "binary",
            k_meaning=declared["k_meaning"] or "importance samples",
            option_defaults=declared["option_defaults"], given_recipe=recipe, given_scorer=scorer)
        _check_declaration(record)
        METHODS[name] = record
        return builder
    return decorate


def _registered_base(builder) -> MethodRecord | None:
    """The record of the nearest registered class `builder` derives from, if any: a
    subclass of a registered method keeps what `run` knows of it (options, data kind)."""
    for base in getattr(builder, "__mro__", ())[1:]:
        for record in METHODS.values():
            if record.builder is base:
                return record
    return None


def record_of(method) -> MethodRecord:
    """The record a built method was registered under (by `build_method`'s mark, else by
    its class); a record with the defaults for a method built outside the registry. A
    method built by a registered function is looked up with its class, whose family gives
    its recipe and scorer."""
    name = getattr(method, "registered_as", None)
    if name in METHODS:
        record = METHODS[name]
        return record if isinstance(record.builder, type) else replace(record, builder=type(method))
    for record in METHODS.values():
        if type(method) is record.builder:
            return record
    name = getattr(type(method), "name", None)  # a class of the earlier API may name itself
    return MethodRecord(name=name if isinstance(name, str) else type(method).__name__,
                        builder=type(method))


def _check_declaration(record: MethodRecord) -> None:
    """Clear errors for a method whose declared options its builder cannot take, or
    whose option disagrees with another method's option of the same name."""
    parameters = inspect.signature(record.builder).parameters
    accepts_any = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
    for option in record.options:
        if not isinstance(option, Option):
            raise TypeError(f"method {record.name!r}: options must be Option declarations, got {option!r}")
        if option.name in STANDARD_PARAMETERS:
            raise ValueError(f"method {record.name!r}: option {option.name!r} is a standard parameter")
        if option.name not in parameters and not accepts_any:
            raise TypeError(f"method {record.name!r} declares option {option.name!r}, which its builder "
                            f"{record.builder.__qualname__} does not take as a keyword")
        for other_name, other in METHODS.items():
            for declared in other.options:
                if declared.name == option.name and (declared.kind, declared.choices, declared.low,
                                                     declared.high) != (option.kind, option.choices,
                                                                         option.low, option.high):
                    raise ValueError(f"method {record.name!r}: option {option.name!r} is declared otherwise "
                                     f"by {other_name!r} (one flag serves both: declare it alike)")


def method_spec_options(name: str) -> dict[str, Option]:
    """{option name: Option} of a registered method."""
    return {option.name: option for option in METHODS[name].options}


def resolved_option_defaults(name: str, profile, data_dim: int) -> dict[str, object]:
    """{option: default} of a registered method for this profile and data."""
    record = METHODS[name]
    defaults = {option.name: option.default for option in record.options}
    if record.option_defaults is not None:
        defaults.update(record.option_defaults(profile, data_dim))
    return defaults
