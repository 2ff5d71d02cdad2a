"""Test-only models with Django 6.1's database-level on_delete (tests/settings.py installs this
app on Django 6.1+ only; the example project must run on 4.2)."""
