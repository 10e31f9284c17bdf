"""Results from a run folder alone: its files (`run_folder`), scores and tables (`scores`),
figures (`plots`), the rebuild of all of them (`analysis`), `report.html` (`report_page`), the
paper's published numbers beside a run (`comparison`) and the human-validation kit (`human`).
"""
