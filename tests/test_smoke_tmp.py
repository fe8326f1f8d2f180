def test_smoke(gunicorn_server, make_check, dd_run_check, aggregator):
    server = gunicorn_server(name='smoke', workers=2)
    check = make_check('smoke')
    dd_run_check(check)
    aggregator.assert_metric('gunicorn.workers', value=2, tags=['app:smoke', 'state:idle'])
