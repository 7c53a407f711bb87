"""The models: MMa4CTR (``mma4ctr``), the few fixes RecBole baselines need (``baselines``), and the ``+mm`` feature-fair variants (``feature_fair``)."""
