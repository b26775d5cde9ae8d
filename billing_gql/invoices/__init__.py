"""Invoices: our numbered invoices and credit notes, mirrored provider invoices, PDFs."""
