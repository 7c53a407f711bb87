"""Reports from records only: the comparison tables and statistics (``comparison``), plots (``figures``), the HTML page (``page``)."""
