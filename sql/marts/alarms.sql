-- One row per pump per alarm seen in pump summaries (the portal's alarm_id; its content hash
-- alarm_key when the portal sends no id), with the content of its latest sighting.
-- materialized: incremental
-- unique_key: pump_id
--
-- An incremental build recomputes the pumps with new summaries (a new summary can list new
-- alarms and ends the activity of those it no longer lists) from their sightings.

with

sightings as (

    select * from {{ ref('int_alarm_sightings') }}

),

summary_tails as (

    select * from {{ ref('int_pump_summary_tails') }}

),

{% if is_incremental() %}

changed_pumps as (

    select pump_id
    from {{ new_rows('int_pump_summary_tails') }}

),

scope_sightings as (

    select sightings.*
    from sightings
    inner join changed_pumps
        on sightings.pump_id = changed_pumps.pump_id

),

{% else %}

scope_sightings as (

    select * from sightings

),

{% endif %}

ranked as (

    select
        *,
        row_number() over (
            partition by pump_id, alarm_identity
            order by fetched_at desc
        ) as recency,
        min(fetched_at) over (partition by pump_id, alarm_identity) as first_reported_at,
        max(fetched_at) over (partition by pump_id, alarm_identity) as last_reported_at,
        count(*) over (partition by pump_id, alarm_identity) as summary_count
    from scope_sightings

),

final as (

    select
        ranked.alarm_key,
        ranked.alarm_id,
        ranked.pump_id,
        ranked.alarm_code,
        ranked.alarm_level,
        ranked.alarm_message,
        ranked.raised_at,
        ranked.cleared_at,
        ranked.first_reported_at,
        ranked.last_reported_at,
        ranked.summary_count,
        -- active: not cleared, and still in the pump's latest summary
        (
            ranked.cleared_at is null
            and ranked.last_reported_at = summary_tails.last_fetched_at
        ) as is_active
    from ranked
    inner join summary_tails
        on ranked.pump_id = summary_tails.pump_id
    where ranked.recency = 1

)

{% if is_incremental() %}

-- Every row of a recomputed pump goes; the rows above come back.
, replaced_rows as (

    select existing.*
    from {{ this }} as existing
    inner join changed_pumps
        on existing.pump_id = changed_pumps.pump_id

)

select
    *,
    false as _removed
from final

union all

select
    *,
    true as _removed
from replaced_rows

{% else %}

select * from final

{% endif %}
