import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridtoken.settings")

app = Celery("gridtoken")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
