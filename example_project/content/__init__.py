"""What users learn: categories and their own contents."""
