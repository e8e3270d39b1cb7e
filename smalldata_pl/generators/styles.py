"""How real a synthetic grain specimen looks: boundary shape, grain-size spread, etch texture and preparation flaws."""

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GrainStyle:
    """Realism settings of a grain specimen; every effect is off at its neutral value (the ``flat`` look).

    Counts are means per 256 x 256 pixels (so a larger image gets proportionally more) and are drawn per sample
    from a Poisson law; with ``randomize > 0`` every strength is also scaled per sample by ``U(1 - r, 1 + r)``.
    Nothing but the grain boundaries enters the mask: scratches, pits, pores, inclusions and twin bands are the
    distractors a segmenter must learn to ignore (twin boundaries do not count for the grain size, ASTM E112).

    Args:
        warp: Amplitude of the smooth random displacement of the tessellation, as a fraction of the grain
            spacing: boundaries curve and wiggle instead of running straight (0 = plain Voronoi).
        warp_scale: Correlation length of the displacement as a fraction of the grain spacing.
        roughness: Fine jaggedness of the boundaries: amplitude in pixels of a displacement correlated over
            about two pixels.
        size_sigma: Log-normal sigma of the seeds' weights in a multiplicatively weighted Voronoi tessellation:
            grain sizes spread log-normally as in real polycrystals and boundaries become arcs (0 = plain).
        groove_width: Range in pixels of the etched groove's half-width; it varies smoothly along the boundaries.
        groove_depth: Range of the groove centre's darkening; it varies smoothly along the boundaries.
        contrast: Spread of the grains' grey levels (orientation contrast).
        shading: Per-grain brightness gradient in a random direction (orientation-dependent etch rate).
        mottle: Fine etch texture inside grains, with a per-grain amplitude.
        relief: Polishing relief: slow height variations lit from one side.
        etch_drift: Smooth variation of the etch response across the specimen (local composition, e.g.
            microsegregation or banding): a unit random field times this amplitude shifts the film thickness
            along the interference colours (whose whole sequence spans 1) in colour, or the grey level otherwise.
            The field runs across boundaries, so a grain's colour changes gradually inside it and steps only at
            its boundary: the model must not take a gradual change for a boundary.
        drift_scale: Correlation length of the etch drift as a fraction of the grain spacing.
        preferred_orientation: Crystallographic texture: the share of grains whose orientation lies near one of
            the specimen's one to three preferred orientations, so neighbouring grains often etch to nearly the
            same colour or grey and their boundary is faint (0 = random orientations).
        striations: Share of the grains crossed by a family of fine parallel dark lines (slip bands, deformation
            or etch striations), in a direction, spacing and depth of their own; texture, not boundary.
        colour: Colour (tint) etching: each grain takes a thin-film interference colour set by its orientation,
            and the image has three channels.
        twin_probability: Fraction of grains crossed by an annealing-twin band (not boundary in the mask).
        boundary_particles: Second-phase particles per 1,000 boundary pixels, drawn as dark discs.
        etch_pits: Dark etch pits.
        scratches: Polishing scratches: long thin dark lines across grains, mostly in one direction.
        pores: Pores: near-black round blobs.
        inclusions: Non-metallic inclusions: dark grey ellipses elongated along one rolling direction.
        randomize: Relative per-sample spread of all strengths above.
    """

    warp: float = 0.0
    warp_scale: float = 0.6
    roughness: float = 0.0
    size_sigma: float = 0.0
    groove_width: tuple[float, float] = (1.2, 1.2)
    groove_depth: tuple[float, float] = (0.35, 0.35)
    contrast: float = 0.2
    shading: float = 0.0
    mottle: float = 0.0
    relief: float = 0.0
    etch_drift: float = 0.0
    drift_scale: float = 0.5
    preferred_orientation: float = 0.0
    striations: float = 0.0
    colour: bool = False
    twin_probability: float = 0.0
    boundary_particles: float = 0.0
    etch_pits: float = 0.0
    scratches: float = 0.0
    pores: float = 0.0
    inclusions: float = 0.0
    randomize: float = 0.0

    def __post_init__(self) -> None:
        for name in ("groove_width", "groove_depth"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(
                    f"GrainStyle.{name} must be a range (low, high) with 0 <= low <= high, got {low, high}"
                )
        negative = [f.name for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), float | int)]
        negative = [name for name in negative if getattr(self, name) < 0]
        if negative:
            raise ValueError(f"GrainStyle strengths must be non-negative; got negative {negative}")
        if self.randomize >= 1:
            raise ValueError(f"GrainStyle.randomize must be below 1 (a relative spread), got {self.randomize}")

    @property
    def is_flat(self) -> bool:
        """True for the plain look of :func:`~smalldata_pl.generators.grains.render_grain_micrograph`."""
        return self == GRAIN_STYLES["flat"]

    def drawn(self, rng: np.random.Generator) -> "GrainStyle":
        """A copy with each strength scaled by an independent factor ``U(1 - randomize, 1 + randomize)``.

        The same number of draws is made whatever the values, so turning one effect off leaves the others' draws
        unchanged.
        """
        factors = rng.uniform(1.0 - self.randomize, 1.0 + self.randomize, len(_RANDOMIZED))
        scaled: dict[str, Any] = {
            name: float(getattr(self, name) * f) for name, f in zip(_RANDOMIZED, factors, strict=True)
        }
        return dataclasses.replace(self, **scaled, randomize=0.0)


# Strengths that vary per sample; the ranges and switches are already per-sample ranges.
_RANDOMIZED = (
    "warp",
    "roughness",
    "size_sigma",
    "contrast",
    "shading",
    "mottle",
    "relief",
    "twin_probability",
    "boundary_particles",
    "etch_pits",
    "scratches",
    "pores",
    "inclusions",
    # Last: samples drawn before these existed keep their factors.
    "etch_drift",
    "preferred_orientation",
    "striations",
)

GRAIN_STYLES: dict[str, GrainStyle] = {
    # Today's look: straight Voronoi edges, flat grains, one groove width; kept as the default so existing
    # configs, checkpoints and benchmark numbers reproduce exactly.
    "flat": GrainStyle(),
    # A polished and etched specimen as it comes off the bench: every effect on, each varied per sample.
    "realistic": GrainStyle(
        warp=0.15,
        warp_scale=0.5,
        roughness=1.2,
        size_sigma=0.35,
        groove_width=(0.6, 2.0),
        groove_depth=(0.05, 0.4),
        contrast=0.2,
        shading=0.06,
        mottle=0.05,
        relief=0.08,
        twin_probability=0.15,
        boundary_particles=0.5,
        etch_pits=40.0,
        scratches=4.0,
        pores=3.0,
        inclusions=2.0,
        randomize=0.5,
    ),
}
# Colour (tint) etching: the realistic specimen with interference colours per grain.
GRAIN_STYLES["tint_etched"] = dataclasses.replace(GRAIN_STYLES["realistic"], colour=True)
# A boundary etch (nital on ferrite, oxalic or Marshall's on austenite, the look of the ASTM E112 charts): grains of
# nearly one grey, told apart only by dark grooves that are deep on most boundaries and faint on some.
GRAIN_STYLES["boundary_etched"] = dataclasses.replace(
    GRAIN_STYLES["realistic"], contrast=0.04, groove_width=(0.8, 2.5), groove_depth=(0.1, 0.7)
)


StyleSpec = str | Mapping[str, Any] | GrainStyle


def resolve_styles(spec: StyleSpec | Sequence[StyleSpec]) -> tuple[GrainStyle, ...]:
    """The styles of a mixture: one spec (see :func:`resolve_style`) or a list, e.g. ``["realistic", "flat"]``.

    Raises:
        ValueError: For an empty list, or an unknown preset or field in any entry.
    """
    specs = [spec] if isinstance(spec, str | Mapping | GrainStyle) else list(spec)
    if not specs:
        raise ValueError("a grain style mixture needs at least one style, e.g. ['realistic', 'boundary_etched']")
    return tuple(resolve_style(entry) for entry in specs)


def resolve_style(spec: StyleSpec) -> GrainStyle:
    """A :class:`GrainStyle` from a preset name, a mapping of overrides, or a style itself.

    A mapping may name its base preset under ``preset`` (default ``flat``); its other keys override fields,
    e.g. ``{"preset": "realistic", "scratches": 0, "colour": true}``.

    Raises:
        ValueError: For an unknown preset or field, naming the choices.
    """
    if isinstance(spec, GrainStyle):
        return spec
    if isinstance(spec, str):
        spec = {"preset": spec}
    overrides = dict(spec)
    preset = overrides.pop("preset", "flat")
    if preset not in GRAIN_STYLES:
        raise ValueError(f"unknown grain style {preset!r}; choose one of {sorted(GRAIN_STYLES)}")
    known = {f.name for f in dataclasses.fields(GrainStyle)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown grain style option(s) {unknown}; choose from {sorted(known)} or 'preset'")
    for name in ("groove_width", "groove_depth"):
        if name in overrides:  # YAML and JSON give lists; a single number means a fixed value
            value = overrides[name]
            overrides[name] = (
                (float(value), float(value)) if isinstance(value, int | float) else tuple(map(float, value))
            )
    return dataclasses.replace(GRAIN_STYLES[preset], **overrides)
