-- One row per alarm per summary fetch (raw `pump_summaries__recent_alarms__alarms`).
-- One select, no import CTE: PostgreSQL merges a view without a WITH clause into the query
-- that reads it, so joins through it can use the raw table's indexes.

select
    -- ids
    _dlt_parent_id as pump_summary_id,
    alarm_key,
    alarm_id,
    pump_id,

    -- text
    code as alarm_code,
    level as alarm_level,
    message as alarm_message,

    -- timestamps (ISO 8601 text in the API; anything else reads as null)
    {{ iso_timestamp('raised_at') }} as raised_at,
    {{ iso_timestamp('cleared_at') }} as cleared_at

from {{ source('pump_summaries__recent_alarms__alarms') }}
