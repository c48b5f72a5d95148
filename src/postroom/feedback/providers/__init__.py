"""Event webhooks of email service providers: Amazon SES (via SNS), SendGrid, Mailgun and
Postmark. One module per provider verifies and parses its calls into ``ProviderEvent``;
``service`` applies them through ``postroom.feedback.effects``."""
