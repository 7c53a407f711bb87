"""Data on RecBole's side: the dataset classes (``dataset``), item multimodal features (``item_modalities``), the split (``paper_split``), and training batches and loaders (``batches``)."""
