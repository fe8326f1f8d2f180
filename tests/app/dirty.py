"""A dirty app (gunicorn >= 25 `--dirty-app`): its arbiter and workers are not HTTP workers."""

from gunicorn.dirty.app import DirtyApp


class Echo(DirtyApp):
    def init(self):
        pass

    def __call__(self, action, *args, **kwargs):
        return args

    def close(self):
        pass
