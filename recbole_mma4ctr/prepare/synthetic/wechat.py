"""Seeded generator of WeChat Big Data Challenge 2021 raw files with planted, known structure.

The real dataset cannot be downloaded on our machines, so the pipeline is exercised on files
that have exactly the real formats (``docs/data.md``) and a structure we know:

``user_action.csv``, ``feed_info.csv``, ``feed_embeddings.csv``
    the real headers, column order and value formats.
``oracle_prob.csv``
    not a real file: one row per ``user_action.csv`` row, in the same order, with the true
    probability of each action and of the paper's weighted label (see "Oracle" below).
``SYNTHETIC.json``
    generator name and version, scale, seed, every parameter, row counts and realised rates,
    so that nobody mistakes a sample for real data.

Every file is written under a temporary name of its own (``.<name>.<pid>.<random>.tmp``) in the
output folder and renamed into place only when complete; ``SYNTHETIC.json`` is removed first and
renamed last, and the folder is locked while it is written (``atomic.folder_lock``).

Planted structure (the "known answer")
--------------------------------------
Topics
    ``n_topics`` (K) topics with unequal sizes (Dirichlet(8) weights).
Authors and feeds
    Every author has a home topic. A feed belongs to an author (heavy-tailed productivity);
    its main topic is the author's home topic with probability ``author_topic_share``, else a
    random topic; it also has a secondary topic (a different one). Each feed has a quality
    ``q_f ~ N(0, quality_sd)`` and a popularity: Zipf(``popularity_zipf``) over a rank that
    follows quality plus N(0, 1) noise, mixed with a uniform share ``popularity_floor``.
    Only ``n_active_feeds`` feeds can be shown to users; the rest exist in feed_info only (as
    in the real data, where 96,564 of 106,444 feeds appear in actions).
Token fields (the id VALUES carry the topic)
    Word ids: common tokens are ``1 .. word_common`` (Zipf); topic k owns the block
    ``[word_common + 1 + k * word_block, word_common + 1 + (k + 1) * word_block)`` (Zipf inside
    the block, in a per-topic random order). A token of ``ocr``, ``asr`` or ``description`` is
    drawn from the main topic's block with probability ``token_main_share``, from the
    secondary topic's block with ``token_secondary_share``, else from the common tokens.
    The ``*_char`` fields use the same recipe on a char vocabulary (``char_common``,
    ``char_block``). Lengths are log-normal and capped: ocr <= ``ocr_max_len`` (150), asr <=
    ``asr_max_len`` (250), description <= ``description_max_len`` (60); a char field is 1.4-2.2
    times as long as its word field (caps 250 / 400 / 100). Better-made feeds carry more text: the
    log-normal median is multiplied by ``exp(length_quality * q_f / quality_sd)``, which is what
    lets the paper's padded-token-id features see quality at all (they mostly see lengths). Empty shares: ocr 15 %, asr 10 %,
    description 5 % (each for the word and the char field alike; ``empty_pair_overlap`` of the
    empties hit both, so each field also has gaps the other fills).
    Keywords (``keyword_common`` shared ids, then blocks of ``keyword_block`` per topic) and
    tags (``tag_shared`` shared ids, then blocks of ``tag_block`` per topic) are drawn mostly
    from the main topic. ``machine_tag_list`` holds ``tag prob`` pairs; main-topic tags get
    high probabilities (Beta(5, 2)), others low (Beta(1, 5)).
    Background music: songs are grouped by topic (80 % from the feed's main topic), each song
    has one singer of the same topic; both ids are empty for ``bgm_empty`` (20 %) of feeds.
    A random ``bgm_hit_share`` of the singers (drawn regardless of topic) are "hits": a feed
    whose song is by one engages more (``bgm_effect``, below), the planted music signal.
    ``feed_embedding`` = 0.8 * centroid(main) + 0.25 * centroid(secondary) + noise (512 floats).
Users
    taste ~ Dirichlet(``taste_concentration``) over topics (sparse-ish), mixed with 3 % uniform;
    affinity ``rel[u, k] = taste[u, k] / max_k taste[u, k]`` in [0, 1]. Activity:
    log-normal(0, ``activity_sigma``) weights split ``n_actions`` (capped at
    ``max_user_share`` of the active feeds), so most but not all users have >= 100 actions.
    A main device (2 with probability ``device2_share``), switched on ``device_switch`` of the
    actions. A propensity ``prop_u ~ N(0, propensity_sd)``. Userids are a sorted random sample
    of ``[0, userid_span * n_users)``; feedids a random sample of ``[0, feedid_span * n_feeds)``.
New feeds over time (cold items)
    ``new_feed_share`` (50 %) of the feeds are released during the window, on a day 1..``n_days``
    (the same number each day, spread evenly over the popularity ranks, independent of topic,
    quality and music); the rest are on offer from day 1. A feed is never shown before its
    release day, and a fresh one is shown more: on day d a feed released on day r weighs
    ``h = 1 + freshness_boost * exp(-(d - r) / freshness_days)`` (boost 2, 1.5 days; ``h = 1``
    for a feed on offer from the start, ``h = 0`` before release). As on the real platform, new
    feeds arrive every day and take most of their views in their first days, so the rows at the
    end of the window hit feeds that the earlier rows never saw: with the defaults about 16 % of
    the chronologically last 10 % of rows (the honest 8:1:1 test) are on feeds absent from the
    first 80 % (train), about 8 % on feeds absent from the first 90 %, about 6 % of the valid
    rows; about 18 % of the day-14 rows are on feeds absent from days 1-12 (the challenge's day
    split). The real WeChat data: 14-17 % of the test feeds never appear in training (docs/data.md).
    The ``tiny`` preset uses a boost of 0.5 (its users take a third of the feeds each, so the
    draw below saturates and over-picks the short-lived new feeds), giving 13-18 %.
    ``SYNTHETIC.json`` states the realised shares (``cold_items``); ``World.feed_release``
    holds the days. A cold feed carries the same planted content as any other (its topic,
    quality and music shape its text, music and embedding), so a model that scores items by
    their modalities can score it; an ID model cannot. With ``new_feed_share = 0`` every feed is
    on offer from day 1 and (almost) no test row is cold.
Exposure
    User u sees distinct feeds, drawn without replacement (Gumbel top-k); on day d feed f has
    weight ``prob(u, f) * h(f, d)``, ``prob(u, f) = taste_exposure * taste[u, topic(f)] * pop(f)
    / pop(topic(f)) + (1 - taste_exposure) * pop(f) / pop(all)``, so the watched-topic mix
    reflects taste. Each day gets about the same share of a user's rows: the draw weighs a feed
    by ``sum_d prob(u, f) h(f, d) / W(u, d)`` (``W(u, d)`` the user's total weight on day d) and
    a drawn feed's day follows ``h(f, d) / W(u, d)`` (saturation makes the last days a few
    per cent busier on the sample, up to a fifth on ``tiny``). Rows are ordered by userid, then
    day.
Engagement
    ``m = taste_weight * rel[u, topic(f)] + topic_effect[topic(f)] + q_f + prop_u + bgm_effect *
    hit(f)`` (everything a model could learn in principle; ``topic_effect ~ N(0,
    topic_effect_sd)``: some categories engage more; ``hit(f)`` = 1 when the feed's singer is a
    hit; ``World.feed_bgm_hit``), ``z = m + eps`` with pair noise ``eps ~ N(0, noise)`` (unobservable). Action k
    is Bernoulli(sigmoid(base_k + action_beta_k * z)), the seven actions conditionally
    independent given z. ``base_k`` is calibrated on the realised z (the first
    ``calibration_rows`` rows) so the expected positive rate is 1 / (1 + the real data's
    negatives-per-positive). The shared z correlates the actions.
Weighted label (the paper's)
    read_comment*4 + like*3 + click_avatar*2 + forward + favorite + comment + follow, divided
    by 13; label 1 when >= 0.5 (an integer weight sum >= 7).
Oracle
    ``p_<action>`` and ``p_weighted`` are the exact probabilities given m, with the pair noise
    integrated out (64-node Gauss-Hermite on a 4097-point grid of m, linear interpolation:
    numerical error far below 1e-6). ``p_weighted`` sums P(actions | z) over the 2^7 action
    combinations whose weight sum is >= 7 (a dynamic programme over the weight sum). The pair
    noise is integrated out because it is unobservable by design: conditioning on it too
    would make a ceiling no model can approach; with the defaults the oracle AUC of
    ``p_weighted`` against the realised label is about 0.87 (seed 2024, sample scale), and the
    weighted label is about 1 positive in 124 (real data: 1 in 390; rarer would leave a 350 k-row
    sample with too few positives to measure anything).
Play and stay
    ``play`` = videoplayseconds * 1000 * exp(N(-0.5 + 0.3 z, 0.6)) ms (capped at 5 views, 4 %
    instant skips with play 0); ``stay`` = play + a log-normal dwell, longer after read_comment
    and comment.

All parameters live in :class:`SyntheticParams`; ``SCALES`` holds the presets ``tiny``,
``sample`` (the default) and ``full`` (the real sizes, generated in bounded chunks).
This module uses numpy and pandas only.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pandas as pd

from ...files import move_into_place, write_text
from ...stats import weighted_auc
from ..atomic import folder_lock, remove_dead_temporaries, temporary_path

GENERATOR = "recbole_mma4ctr.prepare.synthetic.wechat.write_wechat_raw"
GENERATOR_VERSION = "1.3"  # 1.3: feeds released over the window (cold test items); 1.2: hit singers

# The seven actions in user_action.csv column order.
ACTIONS: Tuple[str, ...] = (
    "read_comment", "comment", "like", "click_avatar", "forward", "follow", "favorite",
)
USER_ACTION_COLUMNS: Tuple[str, ...] = (
    "userid", "feedid", "date_", "device", "read_comment", "comment", "like", "play", "stay",
    "click_avatar", "forward", "follow", "favorite",
)
FEED_INFO_COLUMNS: Tuple[str, ...] = (
    "feedid", "authorid", "videoplayseconds", "description", "ocr", "asr", "bgm_song_id",
    "bgm_singer_id", "manual_keyword_list", "machine_keyword_list", "manual_tag_list",
    "machine_tag_list", "description_char", "ocr_char", "asr_char",
)
FEED_EMBEDDING_COLUMNS: Tuple[str, ...] = ("feedid", "feed_embedding")
ORACLE_COLUMNS: Tuple[str, ...] = ("userid", "feedid", "date_", "p_weighted") + tuple(
    "p_" + a for a in ACTIONS
)
# The paper's weighted label: weights in ACTIONS order, divided by 13, positive when >= 0.5.
LABEL_WEIGHTS: Dict[str, int] = {
    "read_comment": 4, "comment": 1, "like": 3, "click_avatar": 2, "forward": 1, "follow": 1,
    "favorite": 1,
}
LABEL_DENOMINATOR = 13
LABEL_THRESHOLD = 0.5
# Negatives per positive of each action in the real user_action.csv (docs/data.md).
REAL_NEGATIVES_PER_POSITIVE: Dict[str, float] = {
    "read_comment": 25.9, "comment": 2406.2, "like": 36.5, "click_avatar": 124.9,
    "forward": 236.3, "follow": 1355.3, "favorite": 715.5,
}

FILES = {
    "user_action": "user_action.csv",
    "feed_info": "feed_info.csv",
    "feed_embeddings": "feed_embeddings.csv",
    "oracle_prob": "oracle_prob.csv",
    "synthetic": "SYNTHETIC.json",
}

_WEIGHTS = np.array([LABEL_WEIGHTS[a] for a in ACTIONS], dtype=np.int64)
_MAX_WEIGHT_SUM = int(_WEIGHTS.sum())  # 13
# Smallest integer weight sum whose share is >= LABEL_THRESHOLD (7 of 13).
_LABEL_MIN_SUM = int(np.ceil(LABEL_THRESHOLD * LABEL_DENOMINATOR - 1e-9))

# Per-action oracle AUCs are reported only up to this many rows (memory).
_PER_ACTION_AUC_MAX_ROWS = 2_000_000

# Independent random streams: SeedSequence([seed, stream, chunk]).
_S_WORLD, _S_TEXT, _S_EMBED, _S_EXPOSURE, _S_ACTIONS, _S_BGM, _S_RELEASE = 1, 2, 3, 4, 5, 6, 7


@dataclass(frozen=True)
class SyntheticParams:
    """Every knob of the generator. ``None`` sizes are derived in :meth:`resolved`."""

    # sizes
    n_users: int = 2_000
    n_feeds: int = 4_000
    n_active_feeds: Optional[int] = None  # None: 96,564 / 106,444 of n_feeds
    n_authors: Optional[int] = None  # None: 18,789 / 106,444 of n_feeds
    n_actions: int = 350_000
    n_days: int = 14
    n_topics: int = 24
    # identifiers
    userid_span: float = 12.5
    feedid_span: float = 1.06
    # users
    taste_concentration: float = 0.15
    activity_sigma: float = 0.5
    max_user_share: float = 0.6
    device2_share: float = 0.55
    device_switch: float = 0.04
    propensity_sd: float = 0.9
    # exposure
    taste_exposure: float = 0.7
    popularity_zipf: float = 0.85
    popularity_floor: float = 0.1
    # feeds
    author_topic_share: float = 0.8
    quality_sd: float = 0.7
    topic_effect_sd: float = 0.8
    length_quality: float = 0.8
    videoplay_median: float = 22.0
    videoplay_sigma: float = 0.65
    # engagement
    taste_weight: float = 1.6
    noise: float = 1.8
    action_beta: Tuple[float, ...] = (1.0, 1.2, 0.9, 1.0, 1.1, 1.2, 1.1)  # ACTIONS order
    negatives_per_positive: Tuple[float, ...] = tuple(
        REAL_NEGATIVES_PER_POSITIVE[a] for a in ACTIONS
    )
    # token vocabularies
    word_common: int = 1_500
    word_block: int = 2_500
    char_common: int = 400
    char_block: int = 500
    keyword_common: int = 300
    keyword_block: int = 600
    tag_shared: int = 40
    tag_block: int = 12
    token_zipf: float = 1.0
    token_main_share: float = 0.62
    token_secondary_share: float = 0.13
    # token sequence lengths (log-normal median, sigma, cap); char = word * U(1.4, 2.2)
    ocr_median_len: float = 30.0
    ocr_len_sigma: float = 0.9
    ocr_max_len: int = 150
    asr_median_len: float = 60.0
    asr_len_sigma: float = 0.8
    asr_max_len: int = 250
    description_median_len: float = 14.0
    description_len_sigma: float = 0.7
    description_max_len: int = 60
    ocr_char_max_len: int = 250
    asr_char_max_len: int = 400
    description_char_max_len: int = 100
    # empty shares
    ocr_empty: float = 0.15
    asr_empty: float = 0.10
    description_empty: float = 0.05
    empty_pair_overlap: float = 0.8
    bgm_empty: float = 0.20
    manual_keyword_empty: float = 0.40
    machine_keyword_empty: float = 0.15
    manual_tag_empty: float = 0.03
    machine_tag_empty: float = 0.10
    songs_per_feed: float = 0.24
    songs_per_singer: float = 1.5
    bgm_hit_share: float = 0.25  # share of singers whose songs raise engagement
    bgm_effect: float = 0.8  # added to m for a feed whose singer is a hit
    # new feeds over time (cold items): a share released during the window, fresh ones shown more
    new_feed_share: float = 0.5  # share of active feeds released on a day 1..n_days; the rest are on offer from day 1
    freshness_boost: float = 2.0  # a feed released a days ago weighs 1 + boost * exp(-a / freshness_days)
    freshness_days: float = 1.5
    # feed embedding
    embedding_dim: int = 512
    embedding_centroid_sd: float = 0.06
    embedding_noise_sd: float = 0.04
    # mechanics (memory bounds, calibration)
    chunk_cells: int = 4_000_000
    feed_chunk: int = 8_192
    calibration_rows: int = 1_000_000

    def resolved(self) -> "SyntheticParams":
        """Fill derived sizes and check every value; returns a new instance."""
        p = self
        if p.n_active_feeds is None:
            p = dataclasses.replace(p, n_active_feeds=max(1, round(p.n_feeds * 96_564 / 106_444)))
        if p.n_authors is None:
            p = dataclasses.replace(p, n_authors=max(1, round(p.n_feeds * 18_789 / 106_444)))
        p = dataclasses.replace(
            p,
            action_beta=_per_action(p.action_beta, "action_beta"),
            negatives_per_positive=_per_action(p.negatives_per_positive, "negatives_per_positive"),
        )
        p._check()
        return p

    def _check(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"synthetic parameters: {what}")

        for name in ("n_users", "n_feeds", "n_actions", "n_days", "n_topics", "n_authors",
                     "n_active_feeds", "embedding_dim", "chunk_cells", "feed_chunk",
                     "calibration_rows", "word_common", "word_block", "char_common",
                     "char_block", "keyword_common", "keyword_block", "tag_shared", "tag_block"):
            need(int(getattr(self, name)) >= 1, f"{name} must be >= 1")
        need(self.n_topics >= 2, "n_topics must be >= 2")
        need(self.n_active_feeds <= self.n_feeds, "n_active_feeds must be <= n_feeds")
        need(self.n_authors <= self.n_feeds, "n_authors must be <= n_feeds")
        need(self.tag_block >= 8, "tag_block must be >= 8 (machine tags draw up to 8)")
        cap = _user_cap(self)
        need(self.n_actions <= cap * self.n_users,
             f"n_actions {self.n_actions} exceeds n_users * {cap} (max_user_share of active feeds)")
        need(self.noise >= 0 and self.quality_sd >= 0 and self.propensity_sd >= 0,
             "noise, quality_sd, propensity_sd must be >= 0")
        need(self.userid_span >= 1 and self.feedid_span >= 1, "id spans must be >= 1")
        need(self.freshness_boost >= 0 and self.freshness_days > 0,
             "freshness_boost must be >= 0 and freshness_days > 0")
        need(all(v > 0 for v in self.negatives_per_positive), "negatives_per_positive must be > 0")
        need(self.token_main_share + self.token_secondary_share <= 1, "token shares exceed 1")
        for name in ("taste_exposure", "popularity_floor", "author_topic_share", "device2_share",
                     "device_switch", "max_user_share", "ocr_empty", "asr_empty",
                     "description_empty", "empty_pair_overlap", "bgm_empty",
                     "manual_keyword_empty", "machine_keyword_empty", "manual_tag_empty",
                     "machine_tag_empty", "token_main_share", "token_secondary_share", "bgm_hit_share",
                     "new_feed_share"):
            need(0.0 <= float(getattr(self, name)) <= 1.0, f"{name} must be in [0, 1]")


def _per_action(value, name: str) -> Tuple[float, ...]:
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(ACTIONS))
        if unknown:
            raise ValueError(f"{name}: unknown action {unknown[0]!r}")
        missing = [a for a in ACTIONS if a not in value]
        if missing:
            raise ValueError(f"{name}: missing action {missing[0]!r}")
        return tuple(float(value[a]) for a in ACTIONS)
    out = tuple(float(v) for v in value)
    if len(out) != len(ACTIONS):
        raise ValueError(f"{name} needs {len(ACTIONS)} values, in the order {ACTIONS}")
    return out


def _user_cap(p: SyntheticParams) -> int:
    return max(1, min(p.n_active_feeds - 1, int(p.max_user_share * p.n_active_feeds)))


# Presets; any field can still be overridden.
SCALES: Dict[str, Dict[str, object]] = {
    # tiny: a user takes a third of the 455 feeds on offer, so the draw without replacement
    # saturates and over-picks the short-lived new feeds; a smaller boost keeps ~15 % cold
    "tiny": dict(n_users=200, n_feeds=500, n_actions=30_000, freshness_boost=0.5),
    "sample": dict(n_users=2_000, n_feeds=4_000, n_actions=350_000),
    "full": dict(n_users=20_000, n_feeds=106_444, n_active_feeds=96_564, n_authors=18_789,
                 n_actions=7_317_882, activity_sigma=1.0),
}


def make_params(scale: str = "sample", **overrides) -> SyntheticParams:
    """The resolved parameters of a scale preset plus overrides (unknown keys: ValueError)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    known = {f.name for f in dataclasses.fields(SyntheticParams)}
    for key in overrides:
        if key not in known:
            raise ValueError(f"unknown synthetic parameter {key!r}")
    values = dict(SCALES[scale])
    values.update(overrides)
    return SyntheticParams(**values).resolved()


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, stream)]))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# ----------------------------------------------------------------------------------------
# The latent world
# ----------------------------------------------------------------------------------------


@dataclass
class World:
    """Latent structure shared by every file (arrays indexed by user / feed position)."""

    params: SyntheticParams
    topic_weight: np.ndarray  # (K,)
    author_topic: np.ndarray  # (n_authors,)
    feed_author: np.ndarray  # (n_feeds,) author index == authorid
    feed_topic: np.ndarray  # (n_feeds,) main topic
    feed_topic2: np.ndarray  # (n_feeds,) secondary topic
    feed_quality: np.ndarray  # (n_feeds,)
    feed_active: np.ndarray  # (n_feeds,) bool: may appear in user_action
    feed_popularity: np.ndarray  # (n_feeds,) 0 for inactive feeds
    feedid: np.ndarray  # (n_feeds,)
    videoplayseconds: np.ndarray  # (n_feeds,)
    taste: np.ndarray  # (n_users, K), rows sum to 1
    affinity: np.ndarray  # (n_users, K) taste / row max
    user_actions: np.ndarray  # (n_users,) number of actions
    user_device: np.ndarray  # (n_users,) main device 1 or 2
    user_propensity: np.ndarray  # (n_users,)
    userid: np.ndarray  # (n_users,) ascending
    topic_effect: np.ndarray  # (K,) engagement offset of each topic
    feed_song: np.ndarray  # (n_feeds,) bgm_song_id, 0 = no music
    feed_singer: np.ndarray  # (n_feeds,) bgm_singer_id, 0 = no music
    feed_bgm_hit: np.ndarray  # (n_feeds,) 1.0 when the feed's singer is a hit, else 0.0
    feed_release: np.ndarray  # (n_feeds,) day from which the feed is shown; 0 = on offer before day 1

    @property
    def m_range(self) -> Tuple[float, float]:
        """Bounds of m (taste, topic, quality, propensity and bgm terms) over every possible pair."""
        p = self.params
        lo = (self.feed_quality.min() + self.user_propensity.min() + min(0.0, p.taste_weight)
              + min(0.0, p.bgm_effect) + self.topic_effect.min())
        hi = (self.feed_quality.max() + self.user_propensity.max() + max(0.0, p.taste_weight)
              + max(0.0, p.bgm_effect) + self.topic_effect.max())
        return float(lo), float(hi)


def allocate(total: int, weights: np.ndarray, cap: int) -> np.ndarray:
    """Split ``total`` into integers proportional to weights, each in [1, cap], summing exactly."""
    n = len(weights)
    counts = np.zeros(n, dtype=np.int64)
    free = np.ones(n, dtype=bool)
    remaining = total
    while True:
        w = np.where(free, weights, 0.0)
        share = remaining * w / w.sum()
        share = np.where(free, np.maximum(share, 1.0), 0.0)
        over = free & (share > cap)
        if not over.any():
            break
        counts[over] = cap
        free &= ~over
        remaining = total - int(counts.sum())
    base = np.floor(share).astype(np.int64)
    counts[free] = base[free]
    short = total - int(counts.sum())
    frac = np.where(free & (counts < cap), share - base, -1.0)
    order = np.argsort(-frac, kind="stable")
    if short > 0:
        counts[order[:short]] += 1
    elif short < 0:  # the floor of 1 overshot: take from the largest free users
        order = np.argsort(-np.where(free, counts, 0), kind="stable")
        i = 0
        while short < 0:
            u = order[i % n]
            if counts[u] > 1:
                counts[u] -= 1
                short += 1
            i += 1
    return counts


def build_world(params: SyntheticParams, seed: int = 0) -> World:
    """The latent topics, authors, feeds and users that ``write_wechat_raw`` uses for ``seed``."""
    p = params.resolved()
    rng = rng_for(seed, _S_WORLD)
    K = p.n_topics
    topic_weight = rng.dirichlet(np.full(K, 8.0))
    author_topic = rng.choice(K, size=p.n_authors, p=topic_weight)
    author_weight = rng.lognormal(0.0, 1.0, size=p.n_authors)
    extra = rng.choice(p.n_authors, size=p.n_feeds - p.n_authors, p=author_weight / author_weight.sum())
    feed_author = rng.permutation(np.concatenate([rng.permutation(p.n_authors), extra]))
    own = rng.random(p.n_feeds) < p.author_topic_share
    feed_topic = np.where(own, author_topic[feed_author], rng.choice(K, size=p.n_feeds, p=topic_weight))
    feed_topic2 = (feed_topic + rng.integers(1, K, size=p.n_feeds)) % K
    feed_quality = rng.normal(0.0, p.quality_sd, size=p.n_feeds)
    feed_active = np.zeros(p.n_feeds, dtype=bool)
    feed_active[rng.permutation(p.n_feeds)[: p.n_active_feeds]] = True
    # popularity: Zipf over a rank that follows quality, plus a uniform floor
    score = feed_quality / max(p.quality_sd, 1e-12) + rng.normal(0.0, 1.0, size=p.n_feeds)
    active_idx = np.flatnonzero(feed_active)
    rank = np.empty(len(active_idx), dtype=np.float64)
    rank[np.argsort(-score[active_idx], kind="stable")] = np.arange(1, len(active_idx) + 1)
    zipf = rank ** (-p.popularity_zipf)
    zipf /= zipf.sum()
    feed_popularity = np.zeros(p.n_feeds)
    feed_popularity[active_idx] = (1 - p.popularity_floor) * zipf + p.popularity_floor / len(active_idx)
    feedid = rng.choice(max(p.n_feeds, int(p.feedid_span * p.n_feeds)), size=p.n_feeds, replace=False)
    vps = np.rint(rng.lognormal(np.log(p.videoplay_median), p.videoplay_sigma, size=p.n_feeds))
    videoplayseconds = np.clip(vps, 2, 300).astype(np.int64)

    gam = rng.gamma(p.taste_concentration, 1.0, size=(p.n_users, K)) + 1e-12
    taste = 0.97 * gam / gam.sum(axis=1, keepdims=True) + 0.03 / K
    affinity = taste / taste.max(axis=1, keepdims=True)
    activity = rng.lognormal(0.0, p.activity_sigma, size=p.n_users)
    user_actions = allocate(p.n_actions, activity, _user_cap(p))
    user_device = np.where(rng.random(p.n_users) < p.device2_share, 2, 1).astype(np.int64)
    user_propensity = rng.normal(0.0, p.propensity_sd, size=p.n_users)
    span = max(p.n_users, int(p.userid_span * p.n_users))
    userid = np.sort(rng.choice(span, size=p.n_users, replace=False))
    topic_effect = rng.normal(0.0, p.topic_effect_sd, size=K)
    song, singer, hit = _background_music(p, feed_topic, seed)
    return World(p, topic_weight, author_topic, feed_author, feed_topic, feed_topic2,
                 feed_quality, feed_active, feed_popularity, feedid, videoplayseconds, taste,
                 affinity, user_actions, user_device, user_propensity, userid, topic_effect,
                 song, singer, hit,
                 release_days(p.n_feeds, p.new_feed_share, p.n_days, feed_popularity, rng_for(seed, _S_RELEASE)))


def release_days(n: int, new_share: float, n_days: int, popularity: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Each of ``n`` items' release day: 0 (on offer before day 1) or, for a random ``new_share``
    of them, a day 1..n_days. The new items, ranked by popularity, take the days in blocks of
    ``n_days``, each block a random permutation of the days: every day gets the same number of
    new items and about the same popularity mass (with Zipf popularity one top item released on
    the last day would otherwise swing a small sample's cold share by several points). Which
    items are new, and when, is independent of everything else about them."""
    release = np.zeros(n, dtype=np.int64)
    new = rng.permutation(n)[: int(round(new_share * n))]
    new = new[np.argsort(-popularity[new], kind="stable")]
    blocks = -(-len(new) // n_days)
    days = np.concatenate([np.zeros(0, dtype=np.int64)] + [rng.permutation(n_days) + 1 for _ in range(blocks)])
    release[new] = days[: len(new)]
    return release


def exposure_by_day(release: np.ndarray, n_days: int, boost: float, fresh_days: float) -> np.ndarray:
    """(items, days) exposure weight of each item on each day 1..n_days: 0 before its release,
    ``1 + boost * exp(-age / fresh_days)`` from it on (age in days since release), 1 for an item
    on offer before day 1 (release 0)."""
    release = np.asarray(release)
    age = np.arange(1, n_days + 1)[None, :] - release[:, None]
    weight = np.where(release[:, None] > 0, 1.0 + boost * np.exp(-np.maximum(age, 0) / fresh_days), 1.0)
    return np.where(age >= 0, weight, 0.0)


def _background_music(p: SyntheticParams, feed_topic: np.ndarray, seed: int):
    """Each feed's (song id, singer id, hit flag): songs per topic (80 % from the feed's main
    topic, Zipf inside it), one singer per song of the same topic, no music for ``bgm_empty``
    of the feeds (ids 0: written as empty cells); ``bgm_hit_share`` of the singers are hits."""
    rng = rng_for(seed, _S_BGM)
    n = len(feed_topic)
    per_topic = max(2, int(round(p.songs_per_feed * p.n_feeds / p.n_topics)))
    singers_per_topic = max(1, int(np.ceil(per_topic / p.songs_per_singer)))
    songs = _ZipfBlock(per_topic, 0.9, p.n_topics, rng)
    song_topic = np.where(rng.random(n) < 0.8, feed_topic, rng.integers(0, p.n_topics, size=n))
    local = songs.draw(song_topic, rng)
    song = 1 + song_topic * per_topic + local
    singer = 1 + song_topic * singers_per_topic + (local * singers_per_topic) // per_topic
    hit_singers = rng.random(p.n_topics * singers_per_topic + 1) < p.bgm_hit_share
    no_bgm = rng.random(n) < p.bgm_empty
    song, singer = np.where(no_bgm, 0, song), np.where(no_bgm, 0, singer)
    hit = np.where(no_bgm, 0.0, hit_singers[singer].astype(np.float64))
    return song.astype(np.int64), singer.astype(np.int64), hit


# ----------------------------------------------------------------------------------------
# feed_info.csv and feed_embeddings.csv
# ----------------------------------------------------------------------------------------


class _ZipfBlock:
    """Zipf-distributed draws over ``size`` ids, with a fixed random id order per block."""

    def __init__(self, size: int, exponent: float, n_blocks: int, rng: np.random.Generator):
        w = np.arange(1, size + 1, dtype=np.float64) ** (-exponent)
        self.cdf = np.cumsum(w / w.sum())
        self.cdf[-1] = 1.0
        self.order = np.stack([rng.permutation(size) for _ in range(n_blocks)])

    def draw(self, block: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rank = np.searchsorted(self.cdf, rng.random(len(block)), side="right")
        return self.order[block, rank]


@dataclass
class _Vocab:
    common: int
    block: int
    common_draw: _ZipfBlock
    topic_draw: _ZipfBlock

    def tokens(self, main: np.ndarray, second: np.ndarray, p: SyntheticParams,
               rng: np.random.Generator) -> np.ndarray:
        """One token id per entry of ``main`` / ``second`` (the owning feed's topics)."""
        u = rng.random(len(main))
        topic = np.where(u < p.token_main_share, main, second)
        ids = self.common + 1 + topic * self.block + self.topic_draw.draw(topic, rng)
        common = u >= p.token_main_share + p.token_secondary_share
        ids[common] = 1 + self.common_draw.draw(np.zeros(int(common.sum()), dtype=np.int64), rng)
        return ids


def _vocab(common: int, block: int, p: SyntheticParams, rng: np.random.Generator) -> _Vocab:
    return _Vocab(common, block, _ZipfBlock(common, p.token_zipf, 1, rng),
                  _ZipfBlock(block, p.token_zipf, p.n_topics, rng))


def _join(ids: np.ndarray, lengths: np.ndarray, sep: str = " ") -> List[str]:
    toks = list(map(str, ids.tolist()))
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    return [sep.join(toks[a:b]) for a, b in zip(starts, ends)]


def _empties(n: int, share: float, overlap: float, rng: np.random.Generator):
    """Empty masks of a word field and its char field: each ``share``, ``overlap`` of them joint."""
    u = rng.random(n)
    both = u < share * overlap
    word_only = (u >= share * overlap) & (u < share)
    char_only = (u >= share) & (u < share * (2 - overlap))
    return both | word_only, both | char_only


def _lengths(n: int, median: float, sigma: float, cap: int, rng: np.random.Generator,
             shift: np.ndarray | float = 0.0) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(np.log(median) + shift, sigma, size=n)), 1, cap).astype(np.int64)


def _feed_text_rows(world: World, lo: int, hi: int, vocabs: Dict[str, _Vocab],
                    rng: np.random.Generator) -> List[List[str]]:
    p = world.params
    n = hi - lo
    main = world.feed_topic[lo:hi]
    second = world.feed_topic2[lo:hi]
    cols: Dict[str, List[str]] = {}
    for field, median, sigma, cap, ccap, empty in (
        ("description", p.description_median_len, p.description_len_sigma,
         p.description_max_len, p.description_char_max_len, p.description_empty),
        ("ocr", p.ocr_median_len, p.ocr_len_sigma, p.ocr_max_len, p.ocr_char_max_len, p.ocr_empty),
        ("asr", p.asr_median_len, p.asr_len_sigma, p.asr_max_len, p.asr_char_max_len, p.asr_empty),
    ):
        # better-made feeds carry more text: lengths scale with exp(length_quality * q / sd)
        shift = p.length_quality * world.feed_quality[lo:hi] / max(p.quality_sd, 1e-12)
        wlen = _lengths(n, median, sigma, cap, rng, shift)
        clen = np.clip(np.rint(wlen * rng.uniform(1.4, 2.2, size=n)), 1, ccap).astype(np.int64)
        wempty, cempty = _empties(n, empty, p.empty_pair_overlap, rng)
        wlen[wempty] = 0
        clen[cempty] = 0
        for name, lens, vocab in ((field, wlen, vocabs["word"]), (field + "_char", clen, vocabs["char"])):
            ids = vocab.tokens(np.repeat(main, lens), np.repeat(second, lens), p, rng)
            cols[name] = _join(ids, lens)

    # keywords: 80 % main topic block, else the shared keyword ids
    kw = vocabs["keyword"]
    for name, empty, kmax in (("manual_keyword_list", p.manual_keyword_empty, 4),
                              ("machine_keyword_list", p.machine_keyword_empty, 5)):
        lens = rng.integers(1, kmax + 1, size=n)
        lens[rng.random(n) < empty] = 0
        t = np.repeat(main, lens)
        ids = kw.common + 1 + t * kw.block + kw.topic_draw.draw(t, rng)
        shared = rng.random(len(t)) >= 0.8
        ids[shared] = 1 + kw.common_draw.draw(np.zeros(int(shared.sum()), dtype=np.int64), rng)
        cols[name] = _join(ids, lens, ";")

    # tags: ids 1..tag_shared shared, then tag_block per topic; distinct within a feed
    manual, machine = [], []
    m_empty = rng.random(n) < p.manual_tag_empty
    mt_empty = rng.random(n) < p.machine_tag_empty
    m_len = rng.integers(1, 4, size=n)
    mt_len = rng.integers(2, 9, size=n)
    for i in range(n):
        topic_tags = p.tag_shared + 1 + int(main[i]) * p.tag_block + rng.permutation(p.tag_block)
        if m_empty[i]:
            manual.append("")
        else:
            tags = topic_tags[: m_len[i]].copy()
            if m_len[i] > 1 and rng.random() < 0.3:
                tags[-1] = 1 + rng.integers(p.tag_shared)
            manual.append(";".join(map(str, np.unique(tags).tolist())))
        if mt_empty[i]:
            machine.append("")
        else:
            k = int(mt_len[i])
            n_main = max(1, k // 2)
            other = p.tag_shared + 1 + int(second[i]) * p.tag_block + rng.permutation(p.tag_block)
            tags = np.concatenate([topic_tags[:n_main], other[: k - n_main]])
            probs = np.concatenate([rng.beta(5, 2, size=n_main), rng.beta(1, 5, size=k - n_main)])
            order = np.argsort(tags, kind="stable")
            machine.append(";".join(f"{t} {q:.8f}" for t, q in zip(tags[order].tolist(),
                                                                    probs[order].tolist())))
    cols["manual_tag_list"] = manual
    cols["machine_tag_list"] = machine

    # background music: drawn with the world (its hit singers shape engagement); 0 = none
    cols["bgm_song_id"] = [str(s) if s else "" for s in world.feed_song[lo:hi].tolist()]
    cols["bgm_singer_id"] = [str(s) if s else "" for s in world.feed_singer[lo:hi].tolist()]
    cols["feedid"] = list(map(str, world.feedid[lo:hi].tolist()))
    cols["authorid"] = list(map(str, world.feed_author[lo:hi].tolist()))
    cols["videoplayseconds"] = list(map(str, world.videoplayseconds[lo:hi].tolist()))
    return [list(row) for row in zip(*(cols[c] for c in FEED_INFO_COLUMNS))]


def _write_feed_files(world: World, seed: int, tmp_info: str, tmp_emb: str) -> None:
    p = world.params
    vrng = rng_for(seed, _S_TEXT, 0)
    vocabs = {
        "word": _vocab(p.word_common, p.word_block, p, vrng),
        "char": _vocab(p.char_common, p.char_block, p, vrng),
        "keyword": _vocab(p.keyword_common, p.keyword_block, p, vrng),
    }
    centroids = rng_for(seed, _S_EMBED, 0).normal(0.0, p.embedding_centroid_sd,
                                                size=(p.n_topics, p.embedding_dim))
    row_fmt = " ".join(["%.8f"] * p.embedding_dim)
    with open(tmp_info, "w", newline="", encoding="utf-8") as fi, \
            open(tmp_emb, "w", newline="", encoding="utf-8") as fe:
        writer = csv.writer(fi, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(FEED_INFO_COLUMNS)
        fe.write(",".join(FEED_EMBEDDING_COLUMNS) + "\n")
        for c, lo in enumerate(range(0, p.n_feeds, p.feed_chunk)):
            hi = min(p.n_feeds, lo + p.feed_chunk)
            writer.writerows(_feed_text_rows(world, lo, hi, vocabs, rng_for(seed, _S_TEXT, c + 1)))
            erng = rng_for(seed, _S_EMBED, c + 1)
            emb = (0.8 * centroids[world.feed_topic[lo:hi]] + 0.25 * centroids[world.feed_topic2[lo:hi]]
                   + erng.normal(0.0, p.embedding_noise_sd, size=(hi - lo, p.embedding_dim)))
            fe.writelines(f"{fid},{row_fmt % tuple(row)}\n"
                          for fid, row in zip(world.feedid[lo:hi].tolist(), emb.tolist()))


# ----------------------------------------------------------------------------------------
# user_action.csv and oracle_prob.csv
# ----------------------------------------------------------------------------------------


def _latent_chunks(world: World, seed: int) -> Iterator[Dict[str, np.ndarray]]:
    """Exposures and engagement latents, user chunk by user chunk (rows: userid, then day).

    A user's feeds are one draw without replacement (Gumbel top-k) with weight
    ``sum_d prob(u, f) * h(f, d) / W(u, d)``, ``h`` the exposure by day (release, freshness) and
    ``W(u, d) = sum_f prob(u, f) h(f, d)``; a drawn feed's day then follows ``h(f, d) / W(u, d)``.
    So each day carries about the same share of the user's rows however many feeds are on offer,
    and on each day the feeds on offer share it in proportion to ``prob * h``."""
    p = world.params
    active = np.flatnonzero(world.feed_active)
    topic = world.feed_topic[active]
    pop = world.feed_popularity[active]
    within = pop / np.bincount(topic, weights=pop, minlength=p.n_topics)[topic]
    glob = pop / pop.sum()
    by_day = exposure_by_day(world.feed_release[active], p.n_days, p.freshness_boost, p.freshness_days)  # (F, D)
    per_chunk = max(1, p.chunk_cells // len(active))
    for c, u0 in enumerate(range(0, p.n_users, per_chunk)):
        u1 = min(p.n_users, u0 + per_chunk)
        rng = rng_for(seed, _S_EXPOSURE, c)
        counts = world.user_actions[u0:u1]
        prob = p.taste_exposure * world.taste[u0:u1][:, topic] * within + (1 - p.taste_exposure) * glob
        per_day = 1.0 / np.maximum(prob @ by_day, 1e-300)  # (users, D): 1 / W(u, d)
        keys = np.log(prob * (per_day @ by_day.T)) + rng.gumbel(size=prob.shape)
        del prob
        kmax = int(counts.max())
        top = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax]
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        del keys
        top = np.take_along_axis(top, order, axis=1)
        take = np.arange(kmax)[None, :] < counts[:, None]
        local = np.repeat(np.arange(u1 - u0), counts)
        feed_local = top[take]
        feed = active[feed_local]
        user = u0 + local
        n = len(feed)
        day_cdf = np.cumsum(by_day[feed_local] * per_day[local], axis=1)
        date = 1 + (day_cdf < (1.0 - rng.random(n))[:, None] * day_cdf[:, -1:]).sum(axis=1)  # u in (0, 1]
        del day_cdf
        order = np.lexsort((rng.random(n), date, user))
        user, feed, date = user[order], feed[order], date[order]
        switch = rng.random(n) < p.device_switch
        device = np.where(switch, 3 - world.user_device[user], world.user_device[user])
        m = (p.taste_weight * world.affinity[user, world.feed_topic[feed]]
             + world.topic_effect[world.feed_topic[feed]]
             + world.feed_quality[feed] + world.user_propensity[user]
             + p.bgm_effect * world.feed_bgm_hit[feed])
        z = m + rng.normal(0.0, p.noise, size=n)
        yield dict(chunk=np.int64(c), user=user, feed=feed, date=date, device=device, m=m, z=z)


def _calibrate(z: np.ndarray, beta: np.ndarray, target: np.ndarray) -> np.ndarray:
    """base_k with mean(sigmoid(base_k + beta_k z)) == target_k (histogram of z, bisection)."""
    lo_z, hi_z = float(z.min()), float(z.max())
    if hi_z - lo_z < 1e-9:
        centres, weight = np.array([lo_z]), np.array([1.0])
    else:
        count, edges = np.histogram(z, bins=8192, range=(lo_z, hi_z))
        keep = count > 0
        centres = (0.5 * (edges[:-1] + edges[1:]))[keep]
        weight = count[keep] / count.sum()
    lo = np.full(len(beta), -60.0)
    hi = np.full(len(beta), 30.0)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        rate = sigmoid(mid[:, None] + beta[:, None] * centres[None, :]) @ weight
        high = rate > target
        hi = np.where(high, mid, hi)
        lo = np.where(high, lo, mid)
    return 0.5 * (lo + hi)


def weighted_label_probability(prob: np.ndarray) -> np.ndarray:
    """P(weighted label = 1) for independent actions with probabilities ``prob[..., ACTIONS]``.

    Exactly the sum over the 2^7 action combinations whose weight sum is >= 7 of the product
    of their probabilities, computed as a dynamic programme over the weight sum.
    """
    prob = np.asarray(prob, dtype=np.float64)
    dist = np.zeros(prob.shape[:-1] + (_MAX_WEIGHT_SUM + 1,))
    dist[..., 0] = 1.0
    for k, w in enumerate(_WEIGHTS.tolist()):
        pk = prob[..., k: k + 1]
        new = dist * (1.0 - pk)
        new[..., w:] += dist[..., : dist.shape[-1] - w] * pk
        dist = new
    return dist[..., _LABEL_MIN_SUM:].sum(axis=-1)


def weighted_label(actions: np.ndarray) -> np.ndarray:
    """The paper's label from a (n, 7) 0/1 array in ACTIONS order."""
    s = np.asarray(actions, dtype=np.int64) @ _WEIGHTS
    return (s / LABEL_DENOMINATOR >= LABEL_THRESHOLD - 1e-12).astype(np.int64)


class _Oracle:
    """Action and label probabilities given m, the pair noise integrated out."""

    def __init__(self, base: np.ndarray, beta: np.ndarray, noise: float, m_lo: float, m_hi: float):
        if noise > 0:
            x, w = np.polynomial.hermite.hermgauss(64)
            eps, w = np.sqrt(2.0) * noise * x, w / np.sqrt(np.pi)
        else:
            eps, w = np.zeros(1), np.ones(1)
        pad = 1e-6 + 1e-3 * (m_hi - m_lo)
        self.grid = np.linspace(m_lo - pad, m_hi + pad, 4097)
        prob = sigmoid(base + beta * (self.grid[:, None, None] + eps[None, :, None]))  # (G, N, 7)
        self.action = np.einsum("gnk,n->kg", prob, w)
        self.weighted = weighted_label_probability(prob) @ w

    def __call__(self, m: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        actions = np.stack([np.interp(m, self.grid, t) for t in self.action], axis=1)
        return np.interp(m, self.grid, self.weighted), actions


def _action_rows(world: World, ch: Dict[str, np.ndarray], base: np.ndarray, oracle: _Oracle,
                 seed: int) -> Tuple[pd.DataFrame, pd.DataFrame]:
    p = world.params
    rng = rng_for(seed, _S_ACTIONS, int(ch["chunk"]))
    z, feed, n = ch["z"], ch["feed"], len(ch["z"])
    beta = np.asarray(p.action_beta)
    acts = (rng.random((n, len(ACTIONS))) < sigmoid(base + beta * z[:, None])).astype(np.int64)
    vps_ms = world.videoplayseconds[feed] * 1000.0
    frac = np.minimum(np.exp(rng.normal(-0.5 + 0.3 * z, 0.6)), 5.0)
    play = np.rint(frac * vps_ms).astype(np.int64)
    play[rng.random(n) < 0.04] = 0
    dwell = rng.lognormal(np.log(2000.0), 0.9, size=n)
    dwell += acts[:, ACTIONS.index("read_comment")] * rng.lognormal(np.log(15000.0), 0.7, size=n)
    dwell += acts[:, ACTIONS.index("comment")] * rng.lognormal(np.log(30000.0), 0.5, size=n)
    stay = play + np.rint(dwell).astype(np.int64)
    userid = world.userid[ch["user"]]
    feedid = world.feedid[feed]
    cols = {"userid": userid, "feedid": feedid, "date_": ch["date"], "device": ch["device"],
            "play": play, "stay": stay}
    cols.update({a: acts[:, k] for k, a in enumerate(ACTIONS)})
    ua = pd.DataFrame({c: cols[c] for c in USER_ACTION_COLUMNS})
    p_weighted, p_act = oracle(ch["m"])
    orc = {"userid": userid, "feedid": feedid, "date_": ch["date"], "p_weighted": p_weighted}
    orc.update({"p_" + a: p_act[:, k] for k, a in enumerate(ACTIONS)})
    return ua, pd.DataFrame(orc, columns=list(ORACLE_COLUMNS))


def _write_rows(fh, frame: pd.DataFrame, fmt: str, n_int: Optional[int] = None) -> None:
    """CSV body rows: the first ``n_int`` columns (all when None) as %d, the rest with ``fmt``."""
    n_int = frame.shape[1] if n_int is None else n_int
    row_fmt = ",".join(["%d"] * n_int + [fmt] * (frame.shape[1] - n_int)) + "\n"
    columns = [frame[c].tolist() for c in frame.columns]
    fh.writelines([row_fmt % row for row in zip(*columns)])


# ----------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------


def write_wechat_raw(out_dir, scale: str = "sample", seed: int = 0, **overrides) -> dict:
    """Write the synthetic WeChat raw files into ``out_dir``; return a summary dict.

    ``scale`` is ``tiny``, ``sample`` or ``full`` (see ``SCALES``); ``overrides`` replace any
    field of :class:`SyntheticParams` (an unknown key raises ValueError). The summary holds
    the paths, row counts, realised per-action positive rates, the weighted-label rate and
    the oracle AUCs; ``SYNTHETIC.json`` holds the same plus every parameter.
    """
    params = make_params(scale, **overrides)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    with folder_lock(out_dir):  # a second generation of this folder waits; it never shares temp files
        return _write_files(out_dir, params, scale, seed)


def _write_files(out_dir: str, params: SyntheticParams, scale: str, seed: int) -> dict:
    """The files of one sample: the old marker goes first, the new one comes last, so a sample
    whose generation stopped midway has none and is never taken as complete."""
    os.makedirs(out_dir, exist_ok=True)
    final = {k: os.path.join(out_dir, v) for k, v in FILES.items()}
    if os.path.exists(final["synthetic"]):
        os.remove(final["synthetic"])
    remove_dead_temporaries(out_dir)
    tmp = {k: str(temporary_path(v)) for k, v in final.items() if k != "synthetic"}
    try:
        world = build_world(params, seed)
        _write_feed_files(world, seed, tmp["feed_info"], tmp["feed_embeddings"])
        move_into_place(tmp["feed_info"], final["feed_info"])
        move_into_place(tmp["feed_embeddings"], final["feed_embeddings"])
        stats = _write_actions(world, seed, tmp["user_action"], tmp["oracle_prob"])
        move_into_place(tmp["user_action"], final["user_action"])
        move_into_place(tmp["oracle_prob"], final["oracle_prob"])
        record = _record(params, scale, seed, stats)
        write_text(final["synthetic"], json.dumps(record, indent=2, sort_keys=False) + "\n")
    finally:
        for path in tmp.values():
            if os.path.exists(path):
                os.remove(path)
    summary = dict(record)
    summary["out_dir"] = out_dir
    summary["paths"] = final
    return summary


def _write_actions(world: World, seed: int, tmp_actions: str, tmp_oracle: str) -> dict:
    p = world.params
    beta = np.asarray(p.action_beta)
    target = 1.0 / (1.0 + np.asarray(p.negatives_per_positive))
    chunks = _latent_chunks(world, seed)
    buffered, n_buffered = [], 0
    for ch in chunks:
        buffered.append(ch)
        n_buffered += len(ch["z"])
        if n_buffered >= min(p.calibration_rows, p.n_actions):
            break
    base = _calibrate(np.concatenate([c["z"] for c in buffered]), beta, target)
    oracle = _Oracle(base, beta, p.noise, *world.m_range)

    positives = np.zeros(len(ACTIONS), dtype=np.int64)
    p_sums = np.zeros(len(ACTIONS))
    p_weighted_all, label_all, act_all, p_act_all = [], [], [], []
    keep_actions = p.n_actions <= _PER_ACTION_AUC_MAX_ROWS
    user_counts = np.zeros(p.n_users, dtype=np.int64)
    feeds_seen = np.zeros(p.n_feeds, dtype=bool)
    feed_all, date_all = [], []
    n_rows = 0

    def chunk_stream():
        while buffered:
            yield buffered.pop(0)
        yield from chunks

    with open(tmp_actions, "w", newline="", encoding="utf-8") as fa, \
            open(tmp_oracle, "w", newline="", encoding="utf-8") as fo:
        for i, ch in enumerate(chunk_stream()):
            ua, orc = _action_rows(world, ch, base, oracle, seed)
            if i == 0:
                fa.write(",".join(USER_ACTION_COLUMNS) + "\n")
                fo.write(",".join(ORACLE_COLUMNS) + "\n")
            _write_rows(fa, ua, "%d")
            _write_rows(fo, orc, "%.8g", n_int=3)
            acts = ua[list(ACTIONS)].to_numpy()
            positives += acts.sum(axis=0)
            p_sums += orc[["p_" + a for a in ACTIONS]].to_numpy().sum(axis=0)
            p_weighted_all.append(orc["p_weighted"].to_numpy(np.float64))
            label_all.append(weighted_label(acts).astype(np.int8))
            if keep_actions:
                act_all.append(acts.astype(np.int8))
                p_act_all.append(orc[["p_" + a for a in ACTIONS]].to_numpy(np.float32))
            user_counts += np.bincount(ch["user"], minlength=p.n_users)
            feeds_seen[ch["feed"]] = True
            feed_all.append(ch["feed"].astype(np.int32))
            date_all.append(ch["date"].astype(np.int16))
            n_rows += len(ua)
    p_weighted = np.concatenate(p_weighted_all)
    label = np.concatenate(label_all)
    oracle_actions = {}
    if keep_actions:
        acts, p_act = np.concatenate(act_all), np.concatenate(p_act_all)
        oracle_actions = {a: weighted_auc(p_act[:, k], acts[:, k]) for k, a in enumerate(ACTIONS)}
    return dict(n_rows=n_rows, positives=positives, p_sums=p_sums, base=base,
                label_pos=int(label.sum()), p_weighted_mean=float(p_weighted.mean()),
                auc=weighted_auc(p_weighted, label), auc_actions=oracle_actions,
                user_counts=user_counts, feeds_seen=int(feeds_seen.sum()),
                released=int(((world.feed_release > 0) & world.feed_active).sum()),
                cold=_wechat_cold_shares(np.concatenate(feed_all), np.concatenate(date_all), p.n_days))


def cold_shares(item: np.ndarray, order_key: np.ndarray) -> Dict[str, float]:
    """How many evaluation rows fall on items no earlier row of the split saw.

    Rows in chronological order: by ``order_key`` (WeChat's day, TikTok's time), file order among
    ties (the converters'). Under RecBole's 8:1:1 cut (``int(0.1 * n)`` rows each for valid and
    test, train the rest): the share of test rows whose item is not in train, of valid rows
    whose item is not in train, and of test rows whose item is in neither train nor valid."""
    item = np.asarray(item)[np.argsort(order_key, kind="stable")]
    n = len(item)
    train_end, valid_end = n - 2 * (n // 10), n - n // 10
    return {
        "test_rows_on_items_not_in_train": unseen_share(item[valid_end:], item[:train_end]),
        "valid_rows_on_items_not_in_train": unseen_share(item[train_end:valid_end], item[:train_end]),
        "test_rows_on_items_not_in_train_or_valid": unseen_share(item[valid_end:], item[:valid_end]),
    }


def unseen_share(rows: np.ndarray, seen: np.ndarray) -> float:
    """Share of ``rows`` whose value is not in ``seen`` (nan without rows)."""
    return float(np.mean(~np.isin(rows, seen))) if len(rows) else float("nan")


def _wechat_cold_shares(feed: np.ndarray, date: np.ndarray, n_days: int) -> Dict[str, float]:
    """``cold_shares`` by day, plus the challenge's day split (train days 1..n_days-2, valid
    n_days-1, test n_days): the share of the last day's rows on feeds absent from the train days."""
    return {**cold_shares(feed, date),
            "day_split_test_rows_on_items_not_in_train": unseen_share(feed[date == n_days], feed[date <= n_days - 2])}


def _rate_dict(values: np.ndarray) -> Dict[str, float]:
    return {a: float(v) for a, v in zip(ACTIONS, values)}


def _record(params: SyntheticParams, scale: str, seed: int, st: dict) -> dict:
    n = st["n_rows"]
    rates = st["positives"] / n
    npp = np.where(st["positives"] > 0, (n - st["positives"]) / np.maximum(st["positives"], 1), np.inf)
    wrate = st["label_pos"] / n
    params_dict = dataclasses.asdict(params)
    params_dict["action_beta"] = _rate_dict(np.asarray(params.action_beta))
    params_dict["negatives_per_positive"] = _rate_dict(np.asarray(params.negatives_per_positive))
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "synthetic": True,
        "note": "Synthetic stand-in for the WeChat Big Data Challenge 2021 raw files; "
                "not real data. oracle_prob.csv is not part of the real format.",
        "scale": scale,
        "seed": int(seed),
        "params": params_dict,
        "files": dict(FILES),
        "counts": {
            "user_action_rows": int(n),
            "users": int((st["user_counts"] > 0).sum()),
            "users_with_at_least_100_actions": int((st["user_counts"] >= 100).sum()),
            "feed_info_rows": int(params.n_feeds),
            "feeds_in_actions": int(st["feeds_seen"]),
            "authors": int(params.n_authors),
            "days": int(params.n_days),
            "feeds_released_in_window": int(st["released"]),
        },
        "cold_items": {k: (None if v != v else round(v, 4)) for k, v in st["cold"].items()},
        "calibrated_base": _rate_dict(st["base"]),
        "target_positive_rate": _rate_dict(1.0 / (1.0 + np.asarray(params.negatives_per_positive))),
        "positive_rate": _rate_dict(rates),
        "negatives_per_positive": {a: (float(v) if np.isfinite(v) else None)
                                   for a, v in zip(ACTIONS, npp)},
        "oracle_mean_probability": _rate_dict(st["p_sums"] / n),
        "weighted_label": {
            "weights": dict(LABEL_WEIGHTS),
            "denominator": LABEL_DENOMINATOR,
            "threshold": LABEL_THRESHOLD,
            "positive_rate": float(wrate),
            "negatives_per_positive": float((n - st["label_pos"]) / st["label_pos"])
            if st["label_pos"] else None,
            "oracle_mean_probability": st["p_weighted_mean"],
        },
        "oracle_auc": {k: (None if v != v else float(v))
                       for k, v in {"weighted": st["auc"], **st["auc_actions"]}.items()},
    }
