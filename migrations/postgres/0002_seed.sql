insert into environments (name, type, enabled, sort_order, created_at) values
    ('development', 'development', true, 1, 0),
    ('production', 'production', true, 2, 0);
insert into projects (id, name, description, created_at) values
    ('default', 'Default', 'Default project', 0);
