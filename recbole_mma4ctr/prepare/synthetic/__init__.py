"""Synthetic raw data in the real datasets' formats, for tests and demos: WeChat (``wechat``) and TikTok (``tiktok``)."""
