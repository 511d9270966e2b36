# The PeriodicTask model has no table (managed=False): this migration only gives it a
# content type and its view/change permissions.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("django_bgtasks", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="PeriodicTask",
            fields=[
                ("name", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("task_name", models.CharField(blank=True, max_length=255)),
            ],
            options={
                "verbose_name": "periodic task",
                "verbose_name_plural": "periodic tasks",
                "managed": False,
                "default_permissions": ("view", "change"),
            },
        ),
    ]
