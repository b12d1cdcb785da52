{#- Fails for NaN or ±infinity in a floating-point column (nulls pass). -#}
{% test finite(model, column_name) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} is not null and not {{ is_finite(column_name) }}
{% endtest %}
