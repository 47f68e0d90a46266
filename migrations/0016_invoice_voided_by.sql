-- Who voided an invoice (a user's email, or the CLI's operator), shown with when and why.
ALTER TABLE invoices ADD COLUMN voided_by text;
