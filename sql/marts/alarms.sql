-- One row per pump per alarm seen in pump summaries (the portal's alarm_id; its content hash
-- alarm_key when the portal sends no id), with the content of its latest sighting.
-- materialized: table (it deduplicates every summary fetch ever appended; see sql/README.md)

with

alarm_sightings as (

    select * from {{ ref('stg_pump_summary_alarms') }}

),

summaries as (

    select * from {{ ref('stg_pump_summaries') }}

),

sightings as (

    select
        alarm_sightings.*,
        coalesce(alarm_sightings.alarm_id, alarm_sightings.alarm_key) as alarm_identity,
        summaries.fetched_at
    from alarm_sightings
    inner join summaries
        on alarm_sightings.pump_summary_id = summaries.pump_summary_id

),

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
    from sightings

),

latest_summaries as (

    select
        pump_id,
        max(fetched_at) as fetched_at
    from summaries
    group by pump_id

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
            and ranked.last_reported_at = latest_summaries.fetched_at
        ) as is_active
    from ranked
    inner join latest_summaries
        on ranked.pump_id = latest_summaries.pump_id
    where ranked.recency = 1

)

select * from final
