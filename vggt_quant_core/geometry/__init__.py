"""Camera geometry as plain tensor functions (no model, no ROS)."""

from .alignment import Sim3, umeyama_sim3
from .cameras import closed_form_inverse_se3, depth_to_camera_points, unproject_depth_map_to_point_map
from .pose_encoding import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from .rotation import mat_to_quat, quat_to_mat

__all__ = ["Sim3", "closed_form_inverse_se3", "depth_to_camera_points", "extri_intri_to_pose_encoding",
           "mat_to_quat", "pose_encoding_to_extri_intri", "quat_to_mat",
           "umeyama_sim3", "unproject_depth_map_to_point_map"]
