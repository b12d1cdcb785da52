-- One row per contract table, after the latest load: rows read from the files
-- the warehouse holds (landed by this load or kept from earlier ones), rows
-- accepted into staging and rows quarantined. Each count comes from its own
-- table, so a row lost on the way shows up as raw_rows <> accepted + quarantined
-- (the test assert_load_reconciles fails the build).
with

landed as (
    select
        source_table,
        count(*) as files,
        count(*) filter (
            where load_id = (select load_id from {{ source('broker', 'latest_load') }})
        ) as files_landed,
        sum(rows + malformed_rows) as raw_rows
    from {{ source('broker', 'landed_files') }}
    group by source_table
),

accepted as (
    {%- for table in ['accounts', 'trades', 'fees', 'balances', 'cash_flows', 'managers'] %}
    select '{{ table }}' as source_table, count(*) as accepted_rows
    from {{ ref('stg_broker__' ~ table) }}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),

quarantined as (
    select
        source_table,
        count(*) as quarantined_rows
    from {{ ref('quarantine') }}
    group by source_table
),

load as (
    select load_id, landed_at from {{ source('broker', 'latest_load') }}
)

-- ordered for its reader, so not the `select * from final` passthrough
select  -- noqa: CV13
    accepted.source_table,
    coalesce(landed.files, 0) as files,
    coalesce(landed.files_landed, 0) as files_landed,
    coalesce(landed.raw_rows, 0)::bigint as raw_rows,
    accepted.accepted_rows::bigint as accepted_rows,
    coalesce(quarantined.quarantined_rows, 0)::bigint as quarantined_rows,
    load.load_id,
    load.landed_at
from accepted
left join landed on accepted.source_table = landed.source_table
left join quarantined on accepted.source_table = quarantined.source_table
cross join load
order by accepted.source_table
