{#- Fails for a value that is not a tier code of tiers.service_plans (nulls pass).
    The codes are defined once, in ml.naming.TIERS; the service plans file must
    list exactly those (orchestration.config_files checks it when it lands). -#}
{% test tier_code(model, column_name) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} is not null
    and {{ column_name }} not in (select tier from {{ ref('service_plans') }})
{% endtest %}
