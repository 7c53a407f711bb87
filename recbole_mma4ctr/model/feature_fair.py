"""Feature-fair baselines: ``<Model>+mm`` is a RecBole model given MMa4CTR's multimodal features.

Why: MMa4CTR reads a fused multimodal item vector and train-only user profiles; RecBole's
baselines, as the paper ran them, read ids only. A gain of MMa4CTR over DIN then mixes the model
with the features. ``DIN+mm``, ``DIEN+mm``, ``DeepFM+mm`` (any RecBole context-aware model, or
the CTR-style sequential models DIN and DIEN, which embed every item feature) train the stock
RecBole model on the same split with one more item feature: ``item_mm``, the very matrix
MMa4CTR gets (``item_modalities``: the ``.mm.npz`` archive aligned to RecBole's item ids and
fused by ``fusion``). With ``mm_user_profiles: true`` the users also carry MMa4CTR's train-only
profiles (``profile_<modality>``, from the training split only; ``profile_source: all`` under
the paper protocol). Defaults: ``properties/feature_fair.yaml``; the fusion and profile keys are
MMa4CTR's own (``properties/model/MMa4CTR.yaml``, layered in by ``config.property_files``).
Records and tables name the model ``DIN+mm``; RecBole's ``config['model']`` is ``DIN``.

How RecBole 1.2.1 embeds a float_seq feature (``ContextRecommender.embed_float_seq_fields``,
``layers.ContextSeqEmbAbstractLayer``): only a field listed in ``numerical_features`` is embedded;
its values are stored as (value, index) pairs ``[.., d, 2]``; position j contributes
``v_j * E[index_j]`` (``E`` an ``nn.Embedding`` of ``field2bucketnum`` rows) and the positions are
mean-pooled over those with a non-zero index. Without ``discretization`` RecBole sets every index
to 1 (``Dataset._discretization``'s else branch), so a d-dimensional vector becomes
``mean(v) * E[1]``: one number times one shared vector, which throws away the vector's direction.

What this module does instead, inside RecBole's own mechanism: index_j = j + 1 and
``field2bucketnum = d + 1``, so the pooled embedding is ``(1/d) * sum_j v_j E[j + 1]``: a learned
linear projection of the whole vector to ``embedding_size`` (row 0, the padding index, is never
used). The model class, its layers and its forward pass are RecBole's, with one exception that
computes the same numbers: in DIN's and DIEN's sequence embedding layer RecBole materialises
``v_j * E[index_j]`` for every history position, position of the vector and embedding unit
(``[batch, 51, d, embedding_size]``: 2.1 GB a tensor at batch 8192, d = 128), then pools it; with
position indices that pooled value is ``v @ E[1:d+1] / d``, a matrix product, which
:func:`lean_model_class` uses for the ``+mm`` fields (mean pooling only; anything else stays
RecBole's). A test checks both give the same embeddings.
``mm_float_seq_index: recbole`` gives RecBole's stock indices (all 1, two buckets), for
comparison only: it costs nothing to offer, and is not the default because it reduces
``item_mm`` to its mean.

The dataset half (``data/feature_fair.py``): a mixin adds ``item_mm`` (and the profiles) to
whichever dataset class the base model already uses here: the labeled sequential datasets (``baselines.py``) for DIN / DIEN, RecBole's plain
``Dataset`` with the split rule (``paper_split.PositionalSplitDataset``) for context-aware
models. Features are injected after RecBole's split, as MMa4CTR's are. Training rows see the
stored train-only profiles (``inclusive``): DIN and DIEN look user features up by user id from
the dataset's table, not from the batch, so MMa4CTR's leave-one-out correction cannot reach them.
RecBole's DIN embeds user features but does not feed them to its DNN, so ``mm_user_profiles``
changes nothing in DIN's scores (a warning says so).
"""

from __future__ import annotations

import types

import torch

MM_SUFFIX = "+mm"
CONTEXT_KIND = "context_aware_recommender"
SEQUENTIAL_WITH_ITEM_FEATURES = ("DIN", "DIEN")   # embed every item feature (ContextSeqEmbLayer)
MARKER = "feature_fair"                           # config key build_config sets for a +mm name


def split_name(model_name: str) -> tuple[str, bool]:
    """``'DIN+mm'`` -> ``('DIN', True)``; ``'DIN'`` -> ``('DIN', False)``."""
    name = str(model_name)
    if name.endswith(MM_SUFFIX):
        return name[:-len(MM_SUFFIX)], True
    return name, False


def check_variant(model_name: str, base: str, kind: str | None) -> None:
    """Refuse a ``+mm`` name whose base model would not read the item feature (one line, why)."""
    if base in ("MMa4CTR", "MMa4CTRMultiTask"):
        raise ValueError(f"{model_name}: {base} already reads the multimodal features; run {base}")
    if kind == CONTEXT_KIND or base in SEQUENTIAL_WITH_ITEM_FEATURES:
        return
    what = (kind or "model").replace("_", " ")
    raise ValueError(f"{model_name}: {base} is a RecBole {what} that does not embed item features, so it has no "
                     f"+mm variant; +mm works with RecBole's context-aware models (DeepFM, WideDeep, xDeepFM, ...) "
                     f"and with {', '.join(SEQUENTIAL_WITH_ITEM_FEATURES)}")


def lean_float_seq_fields(layer, lean_fields: frozenset, float_seq_fields, type):
    """``ContextSeqEmbAbstractLayer.embed_float_seq_fields`` with the ``+mm`` fields pooled as
    ``values @ E[1:d+1] / (d + 1e-8)`` (RecBole's mean over d non-zero indices j + 1, its eps
    included) instead of through the ``[.., d, embedding_size]`` product; other fields, and any
    pooling but mean, go through RecBole's own code."""
    from recbole.model.layers import ContextSeqEmbAbstractLayer

    stock = ContextSeqEmbAbstractLayer.embed_float_seq_fields
    names = layer.float_seq_field_names[type]
    if layer.pooling_mode != "mean":
        return stock(layer, float_seq_fields, type)
    results = []
    for position, (name, field) in enumerate(zip(names, float_seq_fields)):
        table = layer.float_seq_embedding_table[type][position]
        if name not in lean_fields:
            layer_one = types.SimpleNamespace(float_seq_embedding_table={type: [table]}, pooling_mode=layer.pooling_mode,
                                              device=layer.device)
            results.append(stock(layer_one, [field], type))
            continue
        width = field.shape[-2]
        pooled = torch.matmul(field[..., 0], table.weight[1:width + 1]) / (width + 1e-8)
        results.append(pooled.unsqueeze(-2))
    return torch.cat(results, dim=-2) if results else None


def lean_model_class(base):
    """RecBole's ``base`` model; for one with a sequence embedding layer (DIN, DIEN) under
    position indices, its ``+mm`` fields pooled by :func:`lean_float_seq_fields` (same numbers,
    no ``[batch, length, d, embedding_size]`` tensor). Same name, parameters and state dict."""
    from recbole.model.layers import ContextSeqEmbAbstractLayer

    def __init__(self, config, dataset):
        base.__init__(self, config, dataset)
        layer = getattr(self, "embedding_layer", None)
        fields = frozenset(getattr(dataset, "mm_feature_fields", ()))
        if isinstance(layer, ContextSeqEmbAbstractLayer) and getattr(dataset, "index_rule", None) == "position":
            layer.embed_float_seq_fields = types.MethodType(
                lambda own, seq_fields, kind: lean_float_seq_fields(own, fields, seq_fields, kind), layer)

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__,
                                         "__doc__": f"RecBole's {base.__name__} (+mm: lean pooling of item_mm)"})
