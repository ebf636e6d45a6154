-- One row per pump with summaries: when its latest summary was fetched (alarms marks what that
-- summary lists as active).
-- materialized: incremental
-- unique_key: pump_id

with

summaries as (

    select * from {{ ref('stg_pump_summaries') }}

),

{% if is_incremental() %}

new_summaries as (

    select * from {{ new_rows('stg_pump_summaries') }}

),

-- Summaries are only ever added (a replay keeps its key, so its fetch time): the latest one is
-- the later of the old tail and the new summaries.
candidate_summaries as (

    select
        pump_id,
        fetched_at
    from new_summaries

    union all

    select
        tails.pump_id,
        tails.last_fetched_at as fetched_at
    from {{ this }} as tails
    where tails.pump_id in (select pump_id from new_summaries)

),

{% else %}

candidate_summaries as (

    select
        pump_id,
        fetched_at
    from summaries

),

{% endif %}

tails as (

    select
        pump_id,
        max(fetched_at) as last_fetched_at,
        cast({{ build_id }} as bigint) as _build_id
    from candidate_summaries
    group by pump_id

)

select * from tails
