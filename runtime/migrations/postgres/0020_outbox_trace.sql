-- Factum trace context, version 20: the W3C trace context a saga command was queued in (the
-- span that handled its event), so that delivering it continues the trace (feature `otel`).
ALTER TABLE {schema}.saga_outbox ADD COLUMN traceparent text;
