-- One row per alarm per pump summary that listed it, with the summary's fetch time.
-- materialized: incremental
-- unique_key: pump_id, fetched_at
--
-- Raw alarm rows carry no load id (dlt stamps only the summaries), so an incremental build takes
-- the alarms of the new summaries; a replayed summary (same pump and fetch time) replaces its
-- sightings, even with none.

with

alarm_sightings as (

    select * from {{ ref('stg_pump_summary_alarms') }}

),

summaries as (

    {% if is_incremental() %}
    select * from {{ new_rows('stg_pump_summaries') }}
    {% else %}
    select * from {{ ref('stg_pump_summaries') }}
    {% endif %}

),

sightings as (

    select
        alarm_sightings.pump_id,
        summaries.fetched_at,
        alarm_sightings.pump_summary_id,
        alarm_sightings.alarm_key,
        alarm_sightings.alarm_id,
        coalesce(alarm_sightings.alarm_id, alarm_sightings.alarm_key) as alarm_identity,
        alarm_sightings.alarm_code,
        alarm_sightings.alarm_level,
        alarm_sightings.alarm_message,
        alarm_sightings.raised_at,
        alarm_sightings.cleared_at,
        cast({{ build_id }} as bigint) as _build_id
    from alarm_sightings
    inner join summaries
        on alarm_sightings.pump_summary_id = summaries.pump_summary_id

)

{% if is_incremental() %}

-- The sightings of replayed summaries, replaced by the rows above (or by none).
, replaced_sightings as (

    select existing.*
    from {{ this }} as existing
    inner join summaries
        on existing.pump_id = summaries.pump_id
        and existing.fetched_at = summaries.fetched_at

)

select
    *,
    false as _removed
from sightings

union all

select
    *,
    true as _removed
from replaced_sightings

{% else %}

select * from sightings
order by fetched_at

{% endif %}
