"""Seeded generator of TikTok ICME 2019 track 1 raw files with planted, known structure.

The real files (19 GB) cannot be downloaded on our machines, so the TikTok pipeline is exercised
on files with exactly the real layout (``docs/data.md``) and a structure we know:

``final_track1_train.txt``
    tab-separated, no header, the 12 real columns ``uid user_city item_id author_id item_city
    channel finish like music_id device time duration_time``, all integers.
``track1_video_features_part1.txt`` .. ``part11.txt``, ``track1_audio_features_part1.txt`` .. ``part4.txt``
    JSON lines ``{"item_id": 123, "video_feature_dim_128": [128 floats]}`` (audio:
    ``audio_feature_128_dim``). Items are spread over the parts in a random order.
``track1_title.txt``
    JSON lines ``{"item_id": 123, "title_features": {"<word id>": <count>, ...}}``.
``oracle_prob.csv``
    not a real file: header ``p_finish,p_like``, then one row per train row, in file order, with
    the true probability of each label (see "Oracle").
``SYNTHETIC.json``
    generator, version, scale, seed, every parameter, counts, realised rates and oracle AUCs, so
    nobody mistakes a sample for real data.

Every file is written under a temporary name of its own (``.<name>.<pid>.<random>.tmp``) in the
output folder and renamed when complete; ``SYNTHETIC.json`` is removed first and renamed last,
and the folder is locked while it is written (``atomic.folder_lock``).

Planted structure (the "known answer")
--------------------------------------
Topics
    ``n_topics`` (K) topics with unequal sizes (Dirichlet(8) weights).
Items
    An author (heavy-tailed productivity) with a home topic; the item's topic is the author's
    with probability ``author_topic_share``, else random. A quality ``q_i ~ N(0, quality_sd)``;
    a popularity: Zipf(``popularity_zipf``) over a rank that follows quality plus N(0, 1) noise,
    mixed with a uniform share ``popularity_floor``. A duration (log-normal seconds), a city, a
    music id (songs are grouped by topic, ``music_missing`` of the items have -1). A further
    ``feature_only_share`` of items exist in the feature files only (as the real files describe
    test-set items too).
Modalities (what the paper's recipe sees)
    video = ``video_centroid[topic]`` + ``video_quality * q_i / quality_sd * d_v`` + noise;
    audio = ``audio_centroid[music topic]`` + ``audio_quality * q_i / quality_sd * d_a`` + noise,
    the music topic being the item's topic with probability ``music_topic_share``. ``d_v``, ``d_a``
    are fixed random unit directions ("production quality" shows in picture and sound), the
    centroids are N(0, ``*_centroid_sd``) in 128 dims, and the noise has a decaying spectrum
    (variance of the j-th of 128 random orthogonal directions proportional to
    ``(j + 1) ** -noise_decay``), so PCA keeping 90 % of the variance keeps a realistic number of
    components and the topic and quality directions are among the first ones.
    Title: ``1 + Poisson(title_mean_len - 1)`` words; each from the item's topic block of
    ``title_block`` word ids with probability ``title_topic_share``, else from ``title_common``
    common word ids; both draws are Zipf(``title_zipf``), steep (2.3) so that a few words carry
    most of the count variance and PCA keeping 90 % keeps about 22 components, as on the real
    titles; repeated words are counted.
    Coverage: ``video_missing`` (5 %), ``audio_missing`` (8 %) and ``title_missing`` (3 %) of the
    items have no line in that modality's file; ``short_vector_share`` of the vector lines carry
    fewer than 128 floats (the real files do; the authors padded with zeros).
Users
    ``n_heavy_users`` with at least ``heavy_min_rows`` rows each, ``heavy_rows`` in total
    (log-normal(``heavy_sigma``) shares of the surplus), and ``n_light_users`` with fewer than
    ``heavy_min_rows`` rows each, ``light_rows`` in total: a filter at ``heavy_min_rows`` keeps
    exactly the heavy users (the paper kept 1,678 users with >= 4,000 rows). Each user has a taste
    ~ Dirichlet(``taste_concentration``) over topics (affinity = taste / max taste), a propensity
    ``prop_u ~ N(0, propensity_sd)``, a device (Zipf over ``n_devices`` ids) and a city.
New items over time (cold items)
    ``new_item_share`` (35 %) of the shown items are released at the start of a day 1..``n_days``
    (the same number each day, spread evenly over the popularity ranks, independent of topic,
    quality and music); the rest are on offer from the start. An item is never shown before its
    release, and a fresh one is shown more: on day d an item released on day r weighs
    ``h = 1 + freshness_boost * exp(-(d - r) / freshness_days)`` (boost 2, 1.5 days; 1 for an
    item on offer from the start), the WeChat generator's rule (``synthetic.exposure_by_day``).
    With the defaults about 15 % of the chronologically last 10 % of rows (the 8:1:1 test) are on
    items absent from the first 80 % (train; 13-17 % on ``tiny``, by seed); ``SYNTHETIC.json``
    states the realised shares (``cold_items``). A new item's modalities carry its topic and
    quality like any other's, so a content model can score it and an ID model cannot.
Exposure
    Each row's day is uniform on the ``n_days`` days from ``time_origin``, its second uniform in
    the day. Its item is drawn among the items on offer that day: with probability
    ``taste_exposure`` a topic from the user's taste and an item of that topic, else any item, in
    proportion to popularity times ``h`` (repeats are possible); ``channel`` is a random source.
    Rows are written in chunks of about ``chunk_rows`` rows, each chunk holding whole users (in
    uid order) and sorted by time: the file is several time-ordered runs with users interleaved,
    so a reader can rely neither on user grouping nor on global time order.
Engagement
    ``m = taste_weight * affinity[u, topic] + topic_effect[topic] + q_i + prop_u``
    (``topic_effect ~ N(0, topic_effect_sd)``), pair noise ``eps ~ N(0, noise)`` (unobservable),
    ``like ~ Bernoulli(sigmoid(b_like + like_beta * (m + eps)))`` and
    ``finish ~ Bernoulli(sigmoid(b_finish + finish_beta * (m + eps) - finish_duration * s_i))``,
    ``s_i`` the item's standardised log duration (short videos are finished more often); the
    two labels are conditionally independent given ``eps``, so they are correlated. The bases are
    calibrated (bisection on the noise-integrated probabilities of at most ``calibration_rows``
    rows, evenly spread over the file) to the real file's negatives per positive: finish 2.53,
    like 61.3.
    What the recipe can see: topic and quality through the item's modality vectors, the user's
    propensity through the level of the signed-mean profile (a user who likes more has a larger
    profile), taste only weakly (the profile pools its components).
Oracle
    ``p_finish`` and ``p_like`` are the exact probabilities given everything but the pair noise
    (64-node Gauss-Hermite); with the defaults the oracle AUC of ``p_like`` is about 0.83 and
    that of ``p_finish`` about 0.74. On the sample, the paper's recipe gives about 72 / 10 / 23
    dims (the real data: 71 / 10 / 22).

All parameters live in :class:`TikTokParams`; ``SCALES`` holds ``tiny``, ``sample`` (default)
and ``full`` (the paper's 1,678 heavy users with >= 4,000 rows and 8,622,897 rows between them,
plus lighter users; written in bounded chunks). Uses numpy only (and this package's helpers).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from ...files import move_into_place, write_text
from ...stats import weighted_auc
from ..atomic import folder_lock, remove_dead_temporaries, temporary_path
from ..tiktok import (AUDIO_FILES, AUDIO_KEY, FEATURE_DIM, ORACLE_FILE, TITLE_FILE, TITLE_KEY, TRAIN_COLUMNS,
                      TRAIN_FILE, VIDEO_FILES, VIDEO_KEY)
from .wechat import allocate, cold_shares, exposure_by_day, release_days, rng_for, sigmoid

GENERATOR = "recbole_mma4ctr.prepare.synthetic.tiktok.write_tiktok_raw"
GENERATOR_VERSION = "2"  # 2: items released over the window (cold test items)
LABELS: Tuple[str, ...] = ("finish", "like")
# Negatives per positive of each label in the real final_track1_train.txt (docs/data.md).
REAL_NEGATIVES_PER_POSITIVE: Dict[str, float] = {"finish": 2.53, "like": 61.3}
ORACLE_COLUMNS: Tuple[str, ...] = ("p_finish", "p_like")
SYNTHETIC_FILE = "SYNTHETIC.json"

# Independent random streams: SeedSequence([seed, stream, chunk]).
_S_WORLD, _S_VIDEO, _S_AUDIO, _S_TITLE, _S_ROWS, _S_LABELS, _S_RELEASE = 1, 2, 3, 4, 5, 6, 7
_GH_NODES = 64


@dataclass(frozen=True)
class TikTokParams:
    """Every knob of the generator (module docstring); ``None`` sizes are derived."""

    # users
    n_heavy_users: int = 1_500
    heavy_min_rows: int = 50
    heavy_rows: int = 290_000
    heavy_sigma: float = 0.8
    n_light_users: int = 200
    light_rows: int = 4_000
    light_sigma: float = 0.8
    # items
    n_items: int = 20_000
    feature_only_share: float = 0.05
    n_authors: Optional[int] = None  # None: n_items // 6
    n_topics: int = 20
    author_topic_share: float = 0.8
    quality_sd: float = 0.8
    topic_effect_sd: float = 0.6
    popularity_zipf: float = 0.9
    popularity_floor: float = 0.1
    duration_median: float = 12.0
    duration_sigma: float = 0.5
    n_cities: int = 300
    music_per_topic: Optional[int] = None  # None: n_items // (4 * n_topics)
    music_topic_share: float = 0.8
    music_missing: float = 0.1
    # identifiers and context
    uid_span: float = 40.0
    item_span: float = 1.5
    n_channels: int = 5
    n_devices: int = 400
    time_origin: int = 1_546_300_800  # 2019-01-01 00:00:00 UTC
    n_days: int = 10
    # new items over time (cold items): a share released during the window, fresh ones shown more
    new_item_share: float = 0.35  # share of the shown items released at the start of a day 1..n_days
    freshness_boost: float = 2.0  # an item released a days ago weighs 1 + boost * exp(-a / freshness_days)
    freshness_days: float = 1.5
    # users' behaviour
    taste_concentration: float = 0.2
    taste_exposure: float = 0.7
    propensity_sd: float = 0.8
    # engagement
    taste_weight: float = 1.5
    noise: float = 1.2
    like_beta: float = 1.0
    finish_beta: float = 0.6
    finish_duration: float = 0.5
    negatives_per_positive: Tuple[float, float] = (2.53, 61.3)  # finish, like
    # modalities
    video_centroid_sd: float = 0.5
    video_quality: float = 1.0
    video_noise_sd: float = 0.5
    audio_centroid_sd: float = 0.5
    audio_quality: float = 0.6
    audio_noise_sd: float = 0.5
    noise_decay: float = 0.75
    video_missing: float = 0.05
    audio_missing: float = 0.08
    title_missing: float = 0.03
    short_vector_share: float = 0.005
    title_common: int = 300
    title_block: int = 40
    title_mean_len: float = 8.0
    title_topic_share: float = 0.6
    title_zipf: float = 2.3
    # mechanics (memory bounds)
    chunk_rows: int = 100_000
    item_chunk: int = 8_192
    calibration_rows: int = 1_000_000

    def resolved(self) -> "TikTokParams":
        p = self
        if p.n_authors is None:
            p = dataclasses.replace(p, n_authors=max(1, p.n_items // 6))
        if p.music_per_topic is None:
            p = dataclasses.replace(p, music_per_topic=max(2, p.n_items // (4 * p.n_topics)))
        p = dataclasses.replace(p, negatives_per_positive=tuple(float(v) for v in p.negatives_per_positive))
        p._check()
        return p

    def _check(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"synthetic TikTok parameters: {what}")

        for name in ("n_heavy_users", "heavy_min_rows", "n_items", "n_authors", "n_topics", "n_cities",
                     "n_channels", "n_devices", "n_days", "title_common", "title_block", "chunk_rows",
                     "item_chunk", "music_per_topic", "calibration_rows"):
            need(int(getattr(self, name)) >= 1, f"{name} must be >= 1")
        need(self.n_light_users >= 0 and self.light_rows >= 0, "light users and rows must be >= 0")
        need(self.n_topics >= 2, "n_topics must be >= 2")
        need(self.n_authors <= self.n_items, "n_authors must be <= n_items")
        need(self.heavy_rows >= self.n_heavy_users * self.heavy_min_rows,
             f"heavy_rows must be >= n_heavy_users * heavy_min_rows = {self.n_heavy_users * self.heavy_min_rows}")
        if self.n_light_users:
            need(self.heavy_min_rows >= 2, "light users need heavy_min_rows >= 2")
            need(self.n_light_users <= self.light_rows <= self.n_light_users * (self.heavy_min_rows - 1),
                 "light_rows must be between n_light_users and n_light_users * (heavy_min_rows - 1)")
        need(len(self.negatives_per_positive) == 2 and all(v > 0 for v in self.negatives_per_positive),
             "negatives_per_positive needs two positive values (finish, like)")
        need(self.uid_span >= 1 and self.item_span >= 1, "id spans must be >= 1")
        need(self.title_mean_len >= 1, "title_mean_len must be >= 1")
        need(self.freshness_boost >= 0 and self.freshness_days > 0,
             "freshness_boost must be >= 0 and freshness_days > 0")
        for name in ("noise", "quality_sd", "propensity_sd", "topic_effect_sd", "video_noise_sd", "audio_noise_sd",
                     "video_centroid_sd", "audio_centroid_sd", "duration_sigma"):
            need(float(getattr(self, name)) >= 0, f"{name} must be >= 0")
        for name in ("feature_only_share", "author_topic_share", "popularity_floor", "music_topic_share",
                     "music_missing", "taste_exposure", "video_missing", "audio_missing", "title_missing",
                     "short_vector_share", "title_topic_share", "new_item_share"):
            need(0.0 <= float(getattr(self, name)) <= 1.0, f"{name} must be in [0, 1]")


# Presets; any field can still be overridden.
SCALES: Dict[str, Dict[str, object]] = {
    "tiny": dict(n_heavy_users=170, heavy_rows=29_000, n_light_users=30, light_rows=700, n_items=3_000,
                 chunk_rows=10_000),
    "sample": dict(),
    "full": dict(n_heavy_users=1_678, heavy_min_rows=4_000, heavy_rows=8_622_897, heavy_sigma=0.6,
                 n_light_users=30_000, light_rows=1_500_000, light_sigma=1.2, n_items=300_000,
                 n_days=30, chunk_rows=1_000_000),
}


def make_params(scale: str = "sample", **overrides) -> TikTokParams:
    """The resolved parameters of a scale preset plus overrides (unknown keys: ValueError)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TikTokParams)})
    if unknown:
        raise ValueError(f"unknown synthetic TikTok parameter(s) {', '.join(map(repr, unknown))}")
    return TikTokParams(**{**SCALES[scale], **overrides}).resolved()


# ----------------------------------------------------------------------------------------
# The latent world
# ----------------------------------------------------------------------------------------


@dataclass
class World:
    """Latent structure shared by every file (arrays indexed by user / item position)."""

    params: TikTokParams
    item_id: np.ndarray  # (n_all,) every item, feature-only ones last
    item_topic: np.ndarray
    item_author: np.ndarray
    item_quality: np.ndarray
    item_city: np.ndarray
    item_music: np.ndarray  # -1: none
    music_topic: np.ndarray
    duration: np.ndarray  # seconds
    duration_score: np.ndarray  # standardised log duration
    popularity: np.ndarray  # (n_items,) shown items only
    release: np.ndarray  # (n_items,) day from whose start the item is shown; 0 = on offer before day 1
    topic_effect: np.ndarray
    uid: np.ndarray  # ascending
    user_rows: np.ndarray
    user_city: np.ndarray
    user_device: np.ndarray
    user_propensity: np.ndarray
    taste: np.ndarray  # (n_users, K)
    affinity: np.ndarray


def _zipf_choice(rng: np.random.Generator, n_values: int, exponent: float, size) -> np.ndarray:
    weight = np.arange(1, n_values + 1, dtype=np.float64) ** (-exponent)
    return rng.choice(n_values, size=size, p=weight / weight.sum())


def build_world(params: TikTokParams, seed: int = 0) -> World:
    p = params.resolved()
    rng = rng_for(seed, _S_WORLD)
    K = p.n_topics
    n_all = p.n_items + int(round(p.feature_only_share * p.n_items))
    topic_weight = rng.dirichlet(np.full(K, 8.0))
    author_topic = rng.choice(K, size=p.n_authors, p=topic_weight)
    author_weight = rng.lognormal(0.0, 1.0, size=p.n_authors)
    extra = rng.choice(p.n_authors, size=n_all - p.n_authors, p=author_weight / author_weight.sum())
    item_author = rng.permutation(np.concatenate([np.arange(p.n_authors), extra]))
    own = rng.random(n_all) < p.author_topic_share
    item_topic = np.where(own, author_topic[item_author], rng.choice(K, size=n_all, p=topic_weight))
    item_quality = rng.normal(0.0, p.quality_sd, size=n_all)
    score = item_quality[: p.n_items] / max(p.quality_sd, 1e-12) + rng.normal(0.0, 1.0, size=p.n_items)
    rank = np.empty(p.n_items)
    rank[np.argsort(-score, kind="stable")] = np.arange(1, p.n_items + 1)
    zipf = rank ** (-p.popularity_zipf)
    popularity = (1 - p.popularity_floor) * zipf / zipf.sum() + p.popularity_floor / p.n_items
    log_duration = rng.normal(np.log(p.duration_median), p.duration_sigma, size=n_all)
    duration = np.clip(np.rint(np.exp(log_duration)), 1, 300).astype(np.int64)
    log_d = np.log(duration)
    duration_score = (log_d - log_d.mean()) / max(log_d.std(), 1e-12)
    music_topic = np.where(rng.random(n_all) < p.music_topic_share, item_topic, rng.integers(0, K, size=n_all))
    item_music = music_topic * p.music_per_topic + _zipf_choice(rng, p.music_per_topic, 0.9, n_all)
    item_music[rng.random(n_all) < p.music_missing] = -1
    item_city = _zipf_choice(rng, p.n_cities, 1.0, n_all)
    item_id = rng.choice(max(n_all, int(p.item_span * n_all)), size=n_all, replace=False)

    n_users = p.n_heavy_users + p.n_light_users
    heavy = (p.heavy_min_rows - 1) + allocate(p.heavy_rows - p.n_heavy_users * (p.heavy_min_rows - 1),
                                              rng.lognormal(0.0, p.heavy_sigma, size=p.n_heavy_users),
                                              p.heavy_rows)
    light = (allocate(p.light_rows, rng.lognormal(0.0, p.light_sigma, size=p.n_light_users), p.heavy_min_rows - 1)
             if p.n_light_users else np.zeros(0, dtype=np.int64))
    user_rows = rng.permutation(np.concatenate([heavy, light]))
    gam = rng.gamma(p.taste_concentration, 1.0, size=(n_users, K)) + 1e-12
    taste = 0.97 * gam / gam.sum(axis=1, keepdims=True) + 0.03 / K
    affinity = taste / taste.max(axis=1, keepdims=True)
    uid = np.sort(rng.choice(max(n_users, int(p.uid_span * n_users)), size=n_users, replace=False))
    return World(
        params=p, item_id=item_id, item_topic=item_topic, item_author=item_author, item_quality=item_quality,
        item_city=item_city, item_music=item_music, music_topic=music_topic, duration=duration,
        duration_score=duration_score, popularity=popularity,
        release=release_days(p.n_items, p.new_item_share, p.n_days, popularity, rng_for(seed, _S_RELEASE)),
        topic_effect=rng.normal(0.0, p.topic_effect_sd, size=K),
        uid=uid, user_rows=user_rows, user_city=_zipf_choice(rng, p.n_cities, 1.0, n_users),
        user_device=_zipf_choice(rng, p.n_devices, 1.1, n_users),
        user_propensity=rng.normal(0.0, p.propensity_sd, size=n_users), taste=taste, affinity=affinity,
    )


# ----------------------------------------------------------------------------------------
# Feature files
# ----------------------------------------------------------------------------------------


def _noise_basis(p: TikTokParams, rng: np.random.Generator) -> np.ndarray:
    """Rows scaled by the decaying noise spectrum (mean variance 1) times a random rotation."""
    spectrum = np.arange(1, FEATURE_DIM + 1, dtype=np.float64) ** (-p.noise_decay)
    spectrum *= FEATURE_DIM / spectrum.sum()
    rotation, _ = np.linalg.qr(rng.standard_normal((FEATURE_DIM, FEATURE_DIM)))
    return np.sqrt(spectrum)[:, None] * rotation.T


def _vector_model(world: World, kind: str, seed: int):
    """(centroids, quality direction, noise basis, topic per item) of the video or audio vectors."""
    p = world.params
    rng = rng_for(seed, _S_VIDEO if kind == "video" else _S_AUDIO, 0)
    centroid_sd = p.video_centroid_sd if kind == "video" else p.audio_centroid_sd
    centroids = rng.normal(0.0, centroid_sd, size=(p.n_topics, FEATURE_DIM))
    direction = rng.standard_normal(FEATURE_DIM)
    direction /= np.linalg.norm(direction)
    topic = world.item_topic if kind == "video" else world.music_topic
    return centroids, direction, _noise_basis(p, rng), topic


def _vector_lines(world: World, kind: str, items: np.ndarray, model, rng: np.random.Generator) -> list:
    p = world.params
    centroids, direction, basis, topic = model
    loading = p.video_quality if kind == "video" else p.audio_quality
    noise_sd = p.video_noise_sd if kind == "video" else p.audio_noise_sd
    quality = world.item_quality[items] / max(p.quality_sd, 1e-12)
    vectors = (centroids[topic[items]] + loading * quality[:, None] * direction[None, :]
               + noise_sd * rng.standard_normal((len(items), FEATURE_DIM)) @ basis)
    lengths = np.where(rng.random(len(items)) < p.short_vector_share,
                       rng.integers(FEATURE_DIM // 2, FEATURE_DIM, size=len(items)), FEATURE_DIM)
    key = VIDEO_KEY if kind == "video" else AUDIO_KEY
    full_format = ", ".join(["%.6f"] * FEATURE_DIM)
    lines = []
    for item, vector, length in zip(world.item_id[items].tolist(), vectors, lengths.tolist()):
        values = full_format % tuple(vector) if length == FEATURE_DIM else ", ".join(["%.6f"] * length) % tuple(vector[:length])
        lines.append(f'{{"item_id": {item}, "{key}": [{values}]}}\n')
    return lines


def _title_lines(world: World, items: np.ndarray, rng: np.random.Generator, blocks) -> list:
    p = world.params
    common_cdf, block_cdf, block_order = blocks
    n_words = 1 + rng.poisson(p.title_mean_len - 1, size=len(items))
    owner = np.repeat(np.arange(len(items)), n_words)
    topic = world.item_topic[items][owner]
    from_topic = rng.random(len(owner)) < p.title_topic_share
    rank = np.searchsorted(block_cdf, rng.random(len(owner)), side="right")
    words = p.title_common + 1 + topic * p.title_block + block_order[topic, rank]
    common = 1 + np.searchsorted(common_cdf, rng.random(len(owner)), side="right")
    words = np.where(from_topic, words, common)
    pairs, counts = np.unique(owner * (1 << 32) + words, return_counts=True)
    pair_owner, pair_word = pairs >> 32, pairs & ((1 << 32) - 1)
    ends = np.searchsorted(pair_owner, np.arange(len(items)), side="right")
    starts = np.r_[0, ends[:-1]]
    lines = []
    for item, a, b in zip(world.item_id[items].tolist(), starts.tolist(), ends.tolist()):
        body = ", ".join(f'"{w}": {c}' for w, c in zip(pair_word[a:b].tolist(), counts[a:b].tolist()))
        lines.append(f'{{"item_id": {item}, "{TITLE_KEY}": {{{body}}}}}\n')
    return lines


def _title_blocks(p: TikTokParams, rng: np.random.Generator):
    def cdf(size: int) -> np.ndarray:
        weight = np.arange(1, size + 1, dtype=np.float64) ** (-p.title_zipf)
        out = np.cumsum(weight / weight.sum())
        out[-1] = 1.0
        return out

    order = np.stack([rng.permutation(p.title_block) for _ in range(p.n_topics)])
    return cdf(p.title_common), cdf(p.title_block), order


def _write_feature_files(world: World, seed: int, tmp: Dict[str, str]) -> Dict[str, int]:
    """Video parts, audio parts and titles; returns how many items each file set covers."""
    p = world.params
    n_all = len(world.item_id)
    counts = {}
    for kind, files, missing, stream in (("video", VIDEO_FILES, p.video_missing, _S_VIDEO),
                                         ("audio", AUDIO_FILES, p.audio_missing, _S_AUDIO),
                                         ("title", (TITLE_FILE,), p.title_missing, _S_TITLE)):
        rng = rng_for(seed, stream, 1)
        present = rng.permutation(n_all)[: n_all - int(round(missing * n_all))]
        parts = np.array_split(present, len(files))
        model = _vector_model(world, kind, seed) if kind != "title" else _title_blocks(p, rng)
        chunk_index = 0
        for name, part in zip(files, parts):
            with open(tmp[name], "w", encoding="utf-8", newline="\n") as handle:
                for lo in range(0, len(part), p.item_chunk):
                    chunk_index += 1
                    chunk_rng = rng_for(seed, stream, 1 + chunk_index)
                    items = part[lo: lo + p.item_chunk]
                    handle.writelines(_title_lines(world, items, chunk_rng, model) if kind == "title"
                                      else _vector_lines(world, kind, items, model, chunk_rng))
        counts[kind] = int(len(present))
    return counts


# ----------------------------------------------------------------------------------------
# Train rows and the oracle
# ----------------------------------------------------------------------------------------


class _Integrator:
    """E_eps sigmoid(base + logit + beta * eps), eps ~ N(0, noise): Gauss-Hermite quadrature."""

    def __init__(self, noise: float):
        x, w = np.polynomial.hermite.hermgauss(_GH_NODES)
        self.eps, self.weight = (np.sqrt(2.0) * noise * x, w / np.sqrt(np.pi)) if noise > 0 else (np.zeros(1), np.ones(1))

    def __call__(self, base: float, logit: np.ndarray, beta: float) -> np.ndarray:
        out = np.zeros(len(logit))
        for e, w in zip(self.eps, self.weight):
            out += w * sigmoid(base + logit + beta * e)
        return out

    def calibrate(self, logit: np.ndarray, beta: float, target: float) -> float:
        """The base whose mean noise-integrated probability over ``logit`` equals ``target``."""
        count, edges = np.histogram(logit, bins=4096)
        keep = count > 0
        centres, weight = (0.5 * (edges[:-1] + edges[1:]))[keep], count[keep] / count.sum()
        lo, hi = -60.0, 30.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if self(mid, centres, beta) @ weight > target:
                hi = mid
            else:
                lo = mid
        return 0.5 * (lo + hi)


def _day_sampler(world: World, weight: np.ndarray):
    """Draws of one day's items: ``(by_taste(topic, u), by_popularity(u))`` for uniforms ``u`` in
    [0, 1), over the items on offer that day (``weight`` > 0) in proportion to ``weight``; a row
    whose topic has nothing on offer falls back to the popularity draw."""
    on_offer = np.flatnonzero(weight > 0)
    topic = world.item_topic[on_offer]
    by_topic = on_offer[np.argsort(topic, kind="stable")]
    cumulative = np.cumsum(weight[by_topic])
    mass = np.bincount(topic, weights=weight[on_offer], minlength=world.params.n_topics)
    before = np.r_[0.0, np.cumsum(mass)[:-1]]
    global_cumulative = np.cumsum(weight[on_offer])
    last = len(on_offer) - 1

    def by_taste(row_topic: np.ndarray, u: np.ndarray) -> np.ndarray:
        pick = by_topic[np.searchsorted(cumulative, before[row_topic] + u * mass[row_topic], side="right").clip(max=last)]
        return np.where(mass[row_topic] > 0, pick, by_popularity(u))

    def by_popularity(u: np.ndarray) -> np.ndarray:
        return on_offer[np.searchsorted(global_cumulative, u * global_cumulative[-1], side="right").clip(max=last)]

    return by_taste, by_popularity


def _row_chunks(world: World, seed: int) -> Iterator[Dict[str, np.ndarray]]:
    """Rows of whole users (uid order), about ``chunk_rows`` a chunk, each chunk sorted by time.

    A row's day is uniform on the window; its item is drawn among the items on offer that day,
    in proportion to popularity times the item's exposure that day (release, freshness)."""
    p = world.params
    by_day = exposure_by_day(world.release, p.n_days, p.freshness_boost, p.freshness_days)
    weights = world.popularity[:, None] * by_day  # (n_items, n_days)
    taste_cdf = np.cumsum(world.taste, axis=1)
    ends = np.cumsum(world.user_rows)
    bounds = np.searchsorted(ends, np.arange(p.chunk_rows, ends[-1], p.chunk_rows), side="left") + 1
    bounds = np.unique(np.r_[0, bounds[bounds < len(ends)], len(ends)])
    for c, (u0, u1) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
        rng = rng_for(seed, _S_ROWS, c)
        user = np.repeat(np.arange(u0, u1), world.user_rows[u0:u1])
        n = len(user)
        topic = (taste_cdf[user] < rng.random(n)[:, None]).sum(axis=1).clip(max=p.n_topics - 1)
        day = rng.integers(0, p.n_days, size=n)
        u, tasteful = rng.random(n), rng.random(n) < p.taste_exposure
        item = np.empty(n, dtype=np.int64)
        for d in range(p.n_days):
            rows = np.flatnonzero(day == d)
            by_taste, by_popularity = _day_sampler(world, weights[:, d])
            item[rows] = np.where(tasteful[rows], by_taste(topic[rows], u[rows]), by_popularity(u[rows]))
        time = p.time_origin + day * 86_400 + rng.integers(0, 86_400, size=n)
        shuffle = np.lexsort((rng.random(n), time))
        user, item, time = user[shuffle], item[shuffle], time[shuffle]
        m = (p.taste_weight * world.affinity[user, world.item_topic[item]] + world.topic_effect[world.item_topic[item]]
             + world.item_quality[item] + world.user_propensity[user])
        yield dict(chunk=c, user=user, item=item, time=time, m=m, channel=rng.integers(0, p.n_channels, size=n))


def _write_lines(handle, row_format: str, columns: list, batch: int = 50_000) -> None:
    """Formatted rows, ``batch`` at a time (Python ints and strings of a whole chunk would be large)."""
    for lo in range(0, len(columns[0]), batch):
        handle.writelines([row_format % row for row in zip(*(column[lo: lo + batch].tolist() for column in columns))])


def _logits(world: World, item: np.ndarray, m: np.ndarray) -> Dict[str, np.ndarray]:
    """Each label's logit before its base and the pair noise."""
    p = world.params
    return {"finish": p.finish_beta * m - p.finish_duration * world.duration_score[item], "like": p.like_beta * m}


def _calibrate(world: World, seed: int, integrate: _Integrator, betas, targets) -> Dict[str, float]:
    """Bases from every ``stride``-th row of the whole file (the row latents are generated twice)."""
    stride = max(1, -(-int(world.user_rows.sum()) // world.params.calibration_rows))
    parts = [_logits(world, chunk["item"][::stride], chunk["m"][::stride]) for chunk in _row_chunks(world, seed)]
    return {label: integrate.calibrate(np.concatenate([part[label] for part in parts]), betas[label], targets[label])
            for label in LABELS}


def _write_train(world: World, seed: int, tmp_train: str, tmp_oracle: str) -> dict:
    """final_track1_train.txt and oracle_prob.csv, chunk by chunk; returns counts and rates."""
    p = world.params
    integrate = _Integrator(p.noise)
    betas = {"finish": p.finish_beta, "like": p.like_beta}
    targets = {label: 1.0 / (1.0 + npp) for label, npp in zip(LABELS, p.negatives_per_positive)}
    base = _calibrate(world, seed, integrate, betas, targets)
    labels_all = {label: [] for label in LABELS}
    probs_all = {label: [] for label in LABELS}
    user_counts = np.zeros(len(world.uid), dtype=np.int64)
    items_seen = np.zeros(p.n_items, dtype=bool)
    item_all, time_all = [], []
    n_rows = 0
    row_format = "\t".join(["%d"] * len(TRAIN_COLUMNS)) + "\n"
    with open(tmp_train, "w", encoding="utf-8", newline="\n") as train, \
            open(tmp_oracle, "w", encoding="utf-8", newline="\n") as oracle:
        oracle.write(",".join(ORACLE_COLUMNS) + "\n")
        for chunk in _row_chunks(world, seed):
            user, item, m = chunk["user"], chunk["item"], chunk["m"]
            logits = _logits(world, item, m)
            rng = rng_for(seed, _S_LABELS, chunk["chunk"])
            eps = rng.normal(0.0, p.noise, size=len(m))
            draws = rng.random((len(m), 2))
            labels, probs = {}, {}
            for k, label in enumerate(LABELS):
                labels[label] = (draws[:, k] < sigmoid(base[label] + logits[label] + betas[label] * eps)).astype(np.int64)
                probs[label] = integrate(base[label], logits[label], betas[label])
                labels_all[label].append(labels[label].astype(np.int8))
                probs_all[label].append(probs[label].astype(np.float32))
            columns = {
                "uid": world.uid[user], "user_city": world.user_city[user], "item_id": world.item_id[item],
                "author_id": world.item_author[item], "item_city": world.item_city[item], "channel": chunk["channel"],
                "finish": labels["finish"], "like": labels["like"], "music_id": world.item_music[item],
                "device": world.user_device[user], "time": chunk["time"], "duration_time": world.duration[item],
            }
            _write_lines(train, row_format, [columns[c] for c in TRAIN_COLUMNS])
            _write_lines(oracle, "%.8g,%.8g\n", [probs["finish"], probs["like"]])
            user_counts += np.bincount(user, minlength=len(world.uid))
            items_seen[item] = True
            item_all.append(item.astype(np.int32))
            time_all.append(chunk["time"])
            n_rows += len(user)
    labels_all = {k: np.concatenate(v) for k, v in labels_all.items()}
    probs_all = {k: np.concatenate(v) for k, v in probs_all.items()}
    return dict(n_rows=n_rows, base=base, user_counts=user_counts, items_seen=int(items_seen.sum()),
                positives={k: int(v.sum()) for k, v in labels_all.items()},
                mean_probability={k: float(v.mean(dtype=np.float64)) for k, v in probs_all.items()},
                auc={k: weighted_auc(probs_all[k], labels_all[k]) for k in LABELS},
                cold=cold_shares(np.concatenate(item_all), np.concatenate(time_all)))


def _record(params: TikTokParams, scale: str, seed: int, stats: dict, coverage: Dict[str, int], n_all: int,
            world_release: np.ndarray) -> dict:
    n = stats["n_rows"]
    positives = stats["positives"]
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "synthetic": True,
        "note": "Synthetic stand-in for the TikTok ICME 2019 track 1 raw files; not real data. "
                "oracle_prob.csv is not part of the real format.",
        "scale": scale,
        "seed": int(seed),
        "params": {**dataclasses.asdict(params),
                   "negatives_per_positive": dict(zip(LABELS, params.negatives_per_positive))},
        "files": {"train": TRAIN_FILE, "video": list(VIDEO_FILES), "audio": list(AUDIO_FILES), "title": TITLE_FILE,
                  "oracle_prob": ORACLE_FILE, "synthetic": SYNTHETIC_FILE},
        "counts": {
            "train_rows": int(n),
            "users": int((stats["user_counts"] > 0).sum()),
            f"users_with_at_least_{params.heavy_min_rows}_rows": int((stats["user_counts"] >= params.heavy_min_rows).sum()),
            f"rows_of_users_with_at_least_{params.heavy_min_rows}_rows":
                int(stats["user_counts"][stats["user_counts"] >= params.heavy_min_rows].sum()),
            "items": int(params.n_items),
            "items_in_train": stats["items_seen"],
            "items_in_feature_files_only": int(n_all - params.n_items),
            "items_released_in_window": int((world_release > 0).sum()),
            "items_with_video": coverage["video"],
            "items_with_audio": coverage["audio"],
            "items_with_title": coverage["title"],
        },
        "calibrated_base": stats["base"],
        "target_positive_rate": {k: 1.0 / (1.0 + v) for k, v in zip(LABELS, params.negatives_per_positive)},
        "positive_rate": {k: positives[k] / n for k in LABELS},
        "negatives_per_positive": {k: ((n - positives[k]) / positives[k] if positives[k] else None) for k in LABELS},
        "oracle_mean_probability": stats["mean_probability"],
        "oracle_auc": {k: (None if v != v else float(v)) for k, v in stats["auc"].items()},
        "cold_items": {k: (None if v != v else round(v, 4)) for k, v in stats["cold"].items()},
    }


def write_tiktok_raw(out_dir, scale: str = "sample", seed: int = 0, **overrides) -> dict:
    """Write the synthetic TikTok track 1 raw files into ``out_dir``; return a summary dict.

    ``scale`` is ``tiny``, ``sample`` or ``full`` (``SCALES``); ``overrides`` replace any field
    of :class:`TikTokParams` (an unknown key raises ValueError). The summary is the content of
    ``SYNTHETIC.json`` plus ``out_dir`` and ``paths``.
    """
    params = make_params(scale, **overrides)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    with folder_lock(out_dir):  # a second generation of this folder waits; it never shares temp files
        return _write_files(out_dir, params, scale, seed)


def _write_files(out_dir: str, params: TikTokParams, scale: str, seed: int) -> dict:
    """The files of one sample: the old marker goes first, the new one comes last, so a sample
    whose generation stopped midway has none and is never taken as complete."""
    os.makedirs(out_dir, exist_ok=True)
    names = (TRAIN_FILE, ORACLE_FILE) + VIDEO_FILES + AUDIO_FILES + (TITLE_FILE, SYNTHETIC_FILE)
    final = {name: os.path.join(out_dir, name) for name in names}
    if os.path.exists(final[SYNTHETIC_FILE]):  # an old marker must not vouch for a half-written set
        os.remove(final[SYNTHETIC_FILE])
    remove_dead_temporaries(out_dir)
    tmp = {name: str(temporary_path(path)) for name, path in final.items() if name != SYNTHETIC_FILE}
    try:
        world = build_world(params, seed)
        coverage = _write_feature_files(world, seed, tmp)
        stats = _write_train(world, seed, tmp[TRAIN_FILE], tmp[ORACLE_FILE])
        record = _record(params, scale, seed, stats, coverage, len(world.item_id), world.release)
        for name in tmp:
            move_into_place(tmp[name], final[name])
        # SYNTHETIC.json last: its presence marks a complete sample
        write_text(final[SYNTHETIC_FILE], json.dumps(record, indent=2) + "\n")
    finally:
        for path in tmp.values():
            if os.path.exists(path):
                os.remove(path)
    return {**record, "out_dir": out_dir, "paths": final}
