"""nbgrader settings of the students' pods (Zero to JupyterHub): the exchange is ngshare, reached through the hub."""
from ngshare_exchange import configureExchange

c = get_config()  # noqa: F821
configureExchange(c)
c.CourseDirectory.course_id = "cnn_course"
