"""The judge: templates (`templates/`), both orders and the verdict cache (`judge`), the
judgments table and the win/tie/loss rule (`judgments`), verdict parsers (`parsers`), batch mode
(`batch_mode`) and the self-hosted judge's name and weights (`host`).
"""
